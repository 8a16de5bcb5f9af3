//! The contracts in `proto/`, read back from the descriptor set the library
//! embeds: sound declarations, the REST surface and RPC names exactly as
//! DESIGN.md fixes them, and a lint that fails on broken declarations.

use std::collections::BTreeSet;

use prost_reflect::DescriptorPool;
use safra::contract::{self, HttpBinding};

fn pool() -> DescriptorPool {
    safra::contract::descriptor::pool().expect("the embedded descriptor set decodes")
}

#[test]
fn the_contracts_pass_the_lint() {
    let problems = contract::check(&pool());
    assert!(
        problems.is_empty(),
        "contract problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_rpc_of_the_design_exists() {
    let expected = [
        (
            "safra.accounts.v1.AccountsService",
            &[
                "Register",
                "Login",
                "Refresh",
                "Logout",
                "GetMe",
                "GetUser",
                "ListUsers",
                "GetJwks",
            ][..],
        ),
        (
            "safra.marketplace.v1.MarketplaceService",
            &[
                "CreateOffering",
                "GetOffering",
                "ListOfferings",
                "Invest",
                "ListInvestments",
                "ListHolders",
            ][..],
        ),
        (
            "safra.wallet.v1.WalletService",
            &[
                "GetWallet",
                "Deposit",
                "ListTransactions",
                "PayInstallment",
                "Debit",
                "Credit",
            ][..],
        ),
        (
            "safra.distribution.v1.DistributionService",
            &["GetDistribution", "ListDistributions"][..],
        ),
        (
            "safra.notifications.v1.NotificationsService",
            &["ListNotifications", "MarkRead", "StreamNotifications"][..],
        ),
    ];
    let pool = pool();
    for (service, rpcs) in expected {
        let descriptor = pool
            .get_service_by_name(service)
            .unwrap_or_else(|| panic!("{service} is missing"));
        let actual: BTreeSet<String> = descriptor.methods().map(|m| m.name().to_owned()).collect();
        for rpc in rpcs {
            assert!(actual.contains(*rpc), "{service}.{rpc} is missing");
            let method = descriptor
                .methods()
                .find(|m| m.name() == *rpc)
                .expect("present");
            assert_eq!(
                method.input().name(),
                format!("{rpc}Request"),
                "{service}.{rpc} request name"
            );
        }
    }
    let streaming = pool
        .get_service_by_name("safra.notifications.v1.NotificationsService")
        .and_then(|s| s.methods().find(|m| m.name() == "StreamNotifications"))
        .expect("StreamNotifications");
    assert!(streaming.is_server_streaming() && !streaming.is_client_streaming());
}

#[test]
fn get_rpcs_return_the_resource_and_lists_page() {
    let pool = pool();
    for method in contract::safra_methods(&pool) {
        let name = method.name();
        if let Some(resource) = name.strip_prefix("Get") {
            // GetMe reads the caller's own User; GetJwks returns a JWK set.
            let resource = match resource {
                "Me" => "User",
                "Jwks" => "JsonWebKeySet",
                other => other,
            };
            assert_eq!(
                method.output().name(),
                resource,
                "{} returns the resource",
                method.full_name()
            );
        }
        if name.starts_with("List") {
            let input = method.input();
            let output = method.output();
            assert!(
                input.get_field_by_name("page_size").is_some(),
                "{}: page_size",
                method.full_name()
            );
            assert!(
                input.get_field_by_name("page_token").is_some(),
                "{}: page_token",
                method.full_name()
            );
            assert!(
                output.get_field_by_name("next_page_token").is_some(),
                "{}: next_page_token",
                method.full_name()
            );
        }
    }
}

/// DESIGN.md's REST table, verbatim: (rpc, verb, path, body).
const REST_SURFACE: &[(&str, &str, &str, &str)] = &[
    (
        "safra.accounts.v1.AccountsService.Register",
        "POST",
        "/v1/accounts:register",
        "*",
    ),
    (
        "safra.accounts.v1.AccountsService.Login",
        "POST",
        "/v1/accounts:login",
        "*",
    ),
    (
        "safra.accounts.v1.AccountsService.Refresh",
        "POST",
        "/v1/accounts:refresh",
        "*",
    ),
    (
        "safra.accounts.v1.AccountsService.Logout",
        "POST",
        "/v1/accounts:logout",
        "*",
    ),
    (
        "safra.accounts.v1.AccountsService.GetMe",
        "GET",
        "/v1/users/me",
        "",
    ),
    (
        "safra.accounts.v1.AccountsService.GetUser",
        "GET",
        "/v1/users/{user_id}",
        "",
    ),
    (
        "safra.accounts.v1.AccountsService.ListUsers",
        "GET",
        "/v1/users",
        "",
    ),
    (
        "safra.accounts.v1.AccountsService.GetJwks",
        "GET",
        "/.well-known/jwks.json",
        "",
    ),
    (
        "safra.marketplace.v1.MarketplaceService.CreateOffering",
        "POST",
        "/v1/offerings",
        "offering",
    ),
    (
        "safra.marketplace.v1.MarketplaceService.GetOffering",
        "GET",
        "/v1/offerings/{offering_id}",
        "",
    ),
    (
        "safra.marketplace.v1.MarketplaceService.ListOfferings",
        "GET",
        "/v1/offerings",
        "",
    ),
    (
        "safra.marketplace.v1.MarketplaceService.Invest",
        "POST",
        "/v1/offerings/{offering_id}:invest",
        "*",
    ),
    (
        "safra.marketplace.v1.MarketplaceService.ListInvestments",
        "GET",
        "/v1/investments",
        "",
    ),
    (
        "safra.wallet.v1.WalletService.GetWallet",
        "GET",
        "/v1/wallet",
        "",
    ),
    (
        "safra.wallet.v1.WalletService.Deposit",
        "POST",
        "/v1/wallet:deposit",
        "*",
    ),
    (
        "safra.wallet.v1.WalletService.ListTransactions",
        "GET",
        "/v1/wallet/transactions",
        "",
    ),
    (
        "safra.wallet.v1.WalletService.PayInstallment",
        "POST",
        "/v1/offerings/{offering_id}/installments/{installment_number}:pay",
        "*",
    ),
    (
        "safra.distribution.v1.DistributionService.GetDistribution",
        "GET",
        "/v1/distributions/{distribution_id}",
        "",
    ),
    (
        "safra.distribution.v1.DistributionService.ListDistributions",
        "GET",
        "/v1/distributions",
        "",
    ),
    (
        "safra.notifications.v1.NotificationsService.ListNotifications",
        "GET",
        "/v1/notifications",
        "",
    ),
    (
        "safra.notifications.v1.NotificationsService.MarkRead",
        "POST",
        "/v1/notifications/{notification_id}:markRead",
        "*",
    ),
    (
        "safra.notifications.v1.NotificationsService.StreamNotifications",
        "GET",
        "/v1/notifications:stream",
        "",
    ),
];

#[test]
fn the_rest_surface_is_exactly_the_designed_one() {
    let pool = pool();
    for (rpc, verb, path, body) in REST_SURFACE {
        let (service, method) = rpc.rsplit_once('.').expect("qualified name");
        let method = pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == method))
            .unwrap_or_else(|| panic!("{rpc} is missing"));
        let bindings = contract::http_bindings(&method);
        let primary = bindings
            .first()
            .unwrap_or_else(|| panic!("{rpc} has no HTTP binding"));
        assert_eq!(
            (
                primary.method.as_str(),
                primary.path.as_str(),
                primary.body.as_str()
            ),
            (*verb, *path, *body),
            "{rpc}"
        );
    }
}

#[test]
fn internal_methods_are_never_exposed_and_name_their_callers() {
    let pool = pool();
    let internal = [
        (
            "safra.marketplace.v1.MarketplaceService",
            "ListHolders",
            "distribution",
        ),
        ("safra.wallet.v1.WalletService", "Debit", "marketplace"),
        ("safra.wallet.v1.WalletService", "Credit", "distribution"),
    ];
    for (service, rpc, caller) in internal {
        let method = pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == rpc))
            .unwrap_or_else(|| panic!("{service}.{rpc} is missing"));
        let authorization = contract::authorization(&method).expect("declared");
        assert_eq!(
            authorization.access(),
            safra::options::v1::Access::Internal,
            "{rpc}"
        );
        assert!(
            authorization.callers.iter().any(|c| c == caller),
            "{rpc} allows {caller}"
        );
        assert!(
            contract::http_bindings(&method).is_empty(),
            "{rpc} has no HTTP binding"
        );
    }
}

#[test]
fn jwks_declares_public_http_caching() {
    let pool = pool();
    let method = pool
        .get_service_by_name("safra.accounts.v1.AccountsService")
        .and_then(|s| s.methods().find(|m| m.name() == "GetJwks"))
        .expect("GetJwks");
    let cache = contract::http_cache(&method).expect("GetJwks declares http_cache");
    assert_eq!(
        cache.visibility(),
        safra::options::v1::CacheVisibility::Public
    );
    assert!(cache.max_age_seconds > 0);
}

#[test]
fn path_variables_are_parsed_from_templates() {
    let binding = HttpBinding {
        method: "POST".into(),
        path: "/v1/offerings/{offering_id}/installments/{installment_number=*}:pay".into(),
        body: "*".into(),
        response_body: String::new(),
    };
    assert_eq!(
        binding.path_variables(),
        ["offering_id", "installment_number"]
    );
}

/// A contract with every kind of mistake the lint must catch, compiled the
/// way build.rs compiles the real ones.
const BROKEN: &str = r#"
syntax = "proto3";
package safra.broken.v1;
import "google/api/annotations.proto";
import "safra/options/v1/options.proto";
import "safra/type/v1/money.proto";

service BrokenService {
  rpc NoAuthorization(NoAuthorizationRequest) returns (Thing) {
    option (google.api.http) = {get: "/v1/things"};
  }
  rpc NoHttp(NoHttpRequest) returns (Thing) {
    option (safra.options.v1.authorization) = {access: ACCESS_SIGNED_IN};
  }
  rpc BadVariable(BadVariableRequest) returns (Thing) {
    option (google.api.http) = {get: "/v1/things/{thing_id}"};
    option (safra.options.v1.authorization) = {access: ACCESS_PUBLIC};
  }
  rpc ExposedInternal(ExposedInternalRequest) returns (Thing) {
    option (google.api.http) = {post: "/v1/things" body: "*"};
    option (safra.options.v1.authorization) = {access: ACCESS_INTERNAL callers: "wallet"};
  }
  rpc BadKey(BadKeyRequest) returns (Thing) {
    option (google.api.http) = {post: "/v1/things:key" body: "*"};
    option (safra.options.v1.authorization) = {access: ACCESS_ROLES roles: "farmer"};
    option (safra.options.v1.idempotency_key_field) = "request_key";
  }
}

message Thing { string id = 1; }
message NoAuthorizationRequest {}
message NoHttpRequest {}
message BadVariableRequest { string id = 1; }
message ExposedInternalRequest {}
message BadKeyRequest {
  int64 amount = 1 [(safra.options.v1.rules) = {max_len: 3}];
  safra.type.v1.Money price = 2 [(safra.options.v1.rules) = {
    fields: [{field: "amount_cents", rules: {min: 1}}]
  }];
  string name = 3 [(safra.options.v1.rules) = {min_len: 5, max_len: 2, pattern: "("}];
}
"#;

#[test]
fn the_lint_catches_every_kind_of_broken_declaration() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("safra/broken/v1")).expect("mkdir");
    std::fs::write(dir.path().join("safra/broken/v1/broken.proto"), BROKEN).expect("write");
    let proto_root = super::repository_root().join("proto");
    let mut compiler = protox::Compiler::new([dir.path(), proto_root.as_path()]).expect("compiler");
    compiler.include_imports(true);
    compiler
        .open_file("safra/broken/v1/broken.proto")
        .expect("the broken contract still compiles");
    let pool =
        DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).expect("decodes");

    let problems = contract::check(&pool).join("\n");
    for expected in [
        "BrokenService.NoAuthorization: no (safra.options.v1.authorization)",
        "BrokenService.NoHttp: a public method needs a google.api.http binding",
        "BrokenService.BadVariable: path variable 'thing_id' is not a field",
        "BrokenService.ExposedInternal: an internal method must not have a google.api.http binding",
        "BrokenService.BadKey: unknown role 'farmer'",
        "BrokenService.BadKey: idempotency_key_field 'request_key' is not a field",
        "BrokenService.BadKey: declares an idempotency key but not idempotency_level = IDEMPOTENT",
        "BadKeyRequest.amount: rule min_len/max_len (strings only) does not fit this field",
        "BadKeyRequest.price: rule names 'amount_cents', which is not a field of safra.type.v1.Money",
        "BadKeyRequest.name: min_len 5 exceeds max_len 2",
        "BadKeyRequest.name: pattern does not compile",
    ] {
        assert!(
            problems.contains(expected),
            "missing problem '{expected}' in:\n{problems}"
        );
    }
}

/// The buf binary the test command installs (npm package in tools/).
fn buf() -> std::path::PathBuf {
    let buf = super::repository_root().join("tools/node_modules/.bin/buf");
    assert!(
        buf.exists(),
        "{} is missing: run scripts/test, which installs it (npm ci in tools/)",
        buf.display()
    );
    buf
}

fn run_buf(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(buf())
        .args(args)
        .current_dir(super::repository_root())
        .output()
        .expect("buf runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn buf_lint_is_clean() {
    let (ok, output) = run_buf(&["lint", "proto"]);
    assert!(ok, "buf lint:\n{output}");
}

#[test]
fn the_contracts_stay_compatible_with_the_published_baseline() {
    let (ok, output) = run_buf(&["breaking", "proto", "--against", "proto-baseline/v1.binpb"]);
    assert!(
        ok,
        "breaking changes against proto-baseline/v1.binpb:\n{output}"
    );
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn the_breaking_check_rejects_a_renumbered_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("proto");
    copy_tree(&super::repository_root().join("proto"), &copy);
    let money = copy.join("safra/type/v1/money.proto");
    let text = std::fs::read_to_string(&money).expect("money.proto");
    assert!(text.contains("int64 amount_minor = 2;"));
    std::fs::write(
        &money,
        text.replace("int64 amount_minor = 2;", "int64 amount_minor = 3;"),
    )
    .expect("write");

    let copy = copy.to_string_lossy().into_owned();
    let (ok, output) = run_buf(&["breaking", &copy, "--against", "proto-baseline/v1.binpb"]);
    assert!(
        !ok,
        "renumbering Money.amount_minor must be reported as breaking"
    );
    assert!(output.contains("amount_minor"), "{output}");
}
