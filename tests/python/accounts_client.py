"""An independent typed client of the gateway's native gRPC: Python grpcio
stubs generated from proto/ at run time (grpc_tools.protoc), calling the
accounts service through the edge. Run by the cli's `safra up` test:

    python3 tests/python/accounts_client.py <gateway host:port>

Prints one line per check; exits 1 on the first failure.
"""

import pathlib
import subprocess
import sys
import tempfile
import uuid


def generate(root: pathlib.Path, out: pathlib.Path) -> None:
    protos = sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}",
         f"--python_out={out}", f"--grpc_python_out={out}", *protos],
        check=True,
    )
    # protoc makes no package markers; Python 3 namespace packages do without.


def check(label: str, condition: bool, detail: str = "") -> None:
    if not condition:
        print(f"FAIL {label} {detail}")
        sys.exit(1)
    print(f"ok   {label}")


def main() -> None:
    target = sys.argv[1]
    root = pathlib.Path(__file__).resolve().parents[2] / "proto"
    with tempfile.TemporaryDirectory() as out:
        generate(root, pathlib.Path(out))
        sys.path.insert(0, out)
        import grpc
        from safra.accounts.v1 import accounts_pb2, accounts_pb2_grpc

        with grpc.insecure_channel(target) as channel:
            stub = accounts_pb2_grpc.AccountsServiceStub(channel)
            email = f"python-{uuid.uuid4().hex[:12]}@example.com"
            password = "a python password 123"
            registered = stub.Register(accounts_pb2.RegisterRequest(
                email=email, password=password, display_name="Py",
                role=accounts_pb2.ROLE_INVESTOR), timeout=10)
            check("Register answers the user", registered.user.email == email)

            tokens = stub.Login(accounts_pb2.LoginRequest(email=email, password=password), timeout=10)
            check("Login answers a bearer token", tokens.token_type == "Bearer" and tokens.access_token != "")

            me = stub.GetMe(accounts_pb2.GetMeRequest(), timeout=10,
                            metadata=[("authorization", f"Bearer {tokens.access_token}")])
            check("GetMe with the token is the user", me.email == email and me.role == accounts_pb2.ROLE_INVESTOR)

            try:
                stub.GetMe(accounts_pb2.GetMeRequest(), timeout=10)
                check("GetMe without a token is refused", False)
            except grpc.RpcError as error:
                check("GetMe without a token is UNAUTHENTICATED",
                      error.code() == grpc.StatusCode.UNAUTHENTICATED, str(error.code()))

            try:
                stub.Register(accounts_pb2.RegisterRequest(email="not-an-email", password="short"), timeout=10)
                check("a bad registration is refused", False)
            except grpc.RpcError as error:
                details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
                check("a bad registration is INVALID_ARGUMENT with details",
                      error.code() == grpc.StatusCode.INVALID_ARGUMENT and details is not None,
                      str(error.code()))


if __name__ == "__main__":
    main()
