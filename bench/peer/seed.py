#!/usr/bin/env python3
"""Seeds one side of bench/peer.sh (Safra or the FastAPI peer) through its REST API.

First call (no state file yet): registers and logs in a producer, creates the offerings
(a face value that never fills during a benchmark), registers the investors, logs each one
in and deposits a large amount in each wallet. Later calls (the state file exists) only log
the investors in again, for fresh access tokens. Every call then tries each benchmark
request once (so a scenario that would only produce errors stops the run before it starts)
and writes the Lua data file the wrk scripts load: `offerings` (ids) and `tokens` (one access
token per investor).

The two REST surfaces share paths and JSON mapping; what differs (each tried against both
servers) and how this seeder copes, Safra first:
  * writes answer a response message wrapping the resource (`{"user"}` for Register,
    `{"offering"}` for CreateOffering, `{"wallet", "transaction"}` for Deposit,
    `{"investment"}` for Invest); the peer answers the bare resource: `Side.unwrap`;
  * Register wants a password of at least 12 characters (peer: 8), and `role` is required
    (peer: defaults to ROLE_INVESTOR); the e-mail checks differ (Safra takes `x@a.b`, the
    peer wants a top-level domain of 2+ characters; both refuse `x@localhost`): PASSWORD has
    21 characters, the role is always sent, the addresses are `...@bench.example.com`;
  * a single amount is at most 10^12 centavos (face value, deposit; the peer takes more):
    face value and deposit are exactly 10^12, the two installments sum to exactly it;
  * Invest is for investors only (the peer lets a producer invest), GetOffering and
    ListOfferings are public (the peer wants a token): every call here sends an investor's
    token, as the benchmark does;
  * proto3 JSON may leave out default values (a zero `amountMinor`, an empty
    `nextPageToken`); this gateway happens to write them, but nothing here relies on it:
    `Side.minor` reads a missing amount as 0;
  * pageSize above 500 and unknown query parameters are 400 (the peer clamps to 100 and
    ignores unknown parameters): only `pageSize=50` is used;
  * answers carry more fields (Offering `remaining`, `cancelReason`; User `updateTime`;
    LoginResponse `tokenType`), which are ignored.
Standard library only.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

# At least 12 characters (Safra's Register rule; the peer asks for 8).
PASSWORD = "wrk-side-by-side-2024"
CURRENCY = "BRL"
# 10^12 centavos: the largest face value and deposit Safra accepts, never filled by
# R$1.00 investments during a run.
BIG = 10**12


class ApiError(SystemExit):
    pass


class Side:
    """The REST calls of one server, with the response shapes of that server."""

    def __init__(self, name: str, base: str):
        self.name = name
        self.base = base.rstrip("/")
        self.wraps = name == "safra"  # responses wrap the resource in a message

    def call(self, method: str, path: str, body=None, token: str | None = None, ok=(200,)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        for attempt in range(5):
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    status, raw = resp.status, resp.read()
                break
            except urllib.error.HTTPError as err:
                status, raw = err.code, err.read()
                if status in (429, 503) and attempt < 4:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                break
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"raw": raw[:200].decode(errors="replace")}
        if status not in ok:
            raise ApiError(f"seed ({self.name}): {method} {path} -> {status} {json.dumps(payload)[:400]}")
        return status, payload

    def unwrap(self, payload: dict, field: str) -> dict:
        return payload[field] if self.wraps else payload

    @staticmethod
    def minor(money: dict | None) -> int:
        # proto3 JSON leaves out a zero amountMinor (Safra); int64 arrives as a string.
        return int((money or {}).get("amountMinor", "0"))

    # --- accounts ---------------------------------------------------------------------
    def register(self, email: str, role: str) -> None:
        # 409 ALREADY_EXISTS on a second seed of the same server: the account is reused.
        _, payload = self.call("POST", "/v1/accounts:register",
                               {"email": email, "password": PASSWORD,
                                "displayName": email.split("@")[0], "role": role}, ok=(200, 409))
        if payload and "code" not in payload:
            user = self.unwrap(payload, "user")
            assert user.get("email", "").lower() == email.lower(), payload

    def login(self, email: str) -> str:
        _, payload = self.call("POST", "/v1/accounts:login", {"email": email, "password": PASSWORD})
        return payload["accessToken"]

    # --- marketplace ------------------------------------------------------------------
    def create_offering(self, token: str, body: dict) -> str:
        _, payload = self.call("POST", "/v1/offerings", body, token)
        offering = self.unwrap(payload, "offering")
        if offering.get("status") != "OFFERING_STATUS_OPEN":
            raise ApiError(f"seed ({self.name}): new offering not open: {offering}")
        return offering["id"]

    # --- wallet -----------------------------------------------------------------------
    def balance(self, token: str) -> int:
        _, payload = self.call("GET", "/v1/wallet", token=token)
        return self.minor(payload.get("balance"))

    def deposit(self, token: str, amount: int, key: str) -> int:
        _, payload = self.call("POST", "/v1/wallet:deposit",
                               {"amount": {"currencyCode": CURRENCY, "amountMinor": str(amount)},
                                "idempotencyKey": key}, token)
        return self.minor(self.unwrap(payload, "wallet").get("balance"))


def date(d: dt.date) -> dict:
    return {"year": d.year, "month": d.month, "day": d.day}


def offering(i: int) -> dict:
    today = dt.date.today()
    maturity = today + dt.timedelta(days=360)
    deadline = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(days=30)
    first = BIG // 2
    second = BIG - first  # the two installments sum to exactly the face value
    crops = ("soy", "corn", "coffee", "wheat", "cotton")
    return {
        "commodity": crops[i % len(crops)],
        "quantity": str(500 + 10 * i),
        "unit": "bag",
        "faceValue": {"currencyCode": CURRENCY, "amountMinor": str(BIG)},
        "annualRateBps": 900 + i % 700,
        "maturityDate": date(maturity),
        "fundingDeadline": deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "installments": [
            {"number": 1, "dueDate": date(today + dt.timedelta(days=180)),
             "amount": {"currencyCode": CURRENCY, "amountMinor": str(first)}},
            {"number": 2, "dueDate": date(maturity),
             "amount": {"currencyCode": CURRENCY, "amountMinor": str(second)}},
        ],
    }


def investor_email(i: int) -> str:
    return f"wrk.investor.{i:03d}@bench.example.com"


def first_seed(side: Side, offerings: int, investors: int,
               pool: ThreadPoolExecutor) -> tuple[dict, list[str]]:
    producer = "wrk.producer@bench.example.com"
    side.register(producer, "ROLE_PRODUCER")
    ptoken = side.login(producer)
    ids = list(pool.map(lambda i: side.create_offering(ptoken, offering(i)), range(offerings)))

    def investor(i: int) -> str:
        email = investor_email(i)
        side.register(email, "ROLE_INVESTOR")
        token = side.login(email)
        have = side.balance(token)
        if have < BIG // 2:
            after = side.deposit(token, BIG, f"seed-{i}-{uuid.uuid4()}")
            if after < have + BIG:
                raise ApiError(f"seed ({side.name}): deposit left balance {after}")
        return token

    tokens = list(pool.map(investor, range(investors)))
    return {"offerings": ids, "investors": investors}, tokens


def smoke(side: Side, ids: list[str], tokens: list[str]) -> None:
    """Each benchmark request once: all must answer 2xx."""
    tok = tokens[0]
    side.call("GET", f"/v1/offerings/{ids[0]}", token=tok)
    _, page = side.call("GET", "/v1/offerings?pageSize=50", token=tok)
    if len(page.get("offerings", [])) != min(50, len(ids)):
        raise ApiError(f"seed ({side.name}): list returned {len(page.get('offerings', []))} offerings")
    side.call("GET", "/v1/users/me", token=tok)
    side.call("POST", f"/v1/offerings/{ids[-1]}:invest",
              {"amount": {"currencyCode": CURRENCY, "amountMinor": "100"},
               "idempotencyKey": f"smoke-{uuid.uuid4()}"}, tok)


def lua_list(name: str, values: list[str]) -> str:
    return f"{name} = {{\n" + "".join(f'  "{v}",\n' for v in values) + "}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", choices=("safra", "peer"), required=True)
    ap.add_argument("--base", required=True, help="e.g. http://127.0.0.1:8080")
    ap.add_argument("--state", required=True, help="JSON file remembering what was created")
    ap.add_argument("--lua", required=True, help="data file for the wrk scripts")
    ap.add_argument("--offerings", type=int, default=200)
    ap.add_argument("--investors", type=int, default=64)
    ap.add_argument("--workers", type=int, default=4, help="requests in flight while seeding")
    a = ap.parse_args()
    side = Side(a.side, a.base)
    started = time.monotonic()
    with ThreadPoolExecutor(a.workers) as pool:
        try:
            with open(a.state) as f:
                state = json.load(f)
        except FileNotFoundError:
            state, tokens = first_seed(side, a.offerings, a.investors, pool)
            with open(a.state, "w") as f:
                json.dump(state, f)
            fresh = True
        else:
            tokens = list(pool.map(lambda i: side.login(investor_email(i)), range(state["investors"])))
            fresh = False
    smoke(side, state["offerings"], tokens)
    with open(a.lua, "w") as f:
        f.write(f"-- written by bench/peer/seed.py for {a.side} ({a.base})\n")
        f.write(lua_list("offerings", state["offerings"]))
        f.write(lua_list("tokens", tokens))
    what = "seeded" if fresh else "fresh tokens"
    print(f"seed ({a.side}): {what}: {len(state['offerings'])} offerings, {len(tokens)} investors "
          f"in {time.monotonic() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
