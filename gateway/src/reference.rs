//! The API reference as Markdown, generated from the same descriptors the
//! gateway routes by: every public service and RPC with its proto comment,
//! REST bindings, gRPC path, who may call it and its idempotency, then
//! every message and enum those RPCs use, field by field with the JSON
//! name, type, rules and comment. `safra docs reference` writes it for the
//! book; nothing in it is written by hand.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write,
};

use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor};
use safra::{
    contract::{self, comment},
    options::v1::{Access, FieldRules, StringFormat},
};

use crate::routes::Routes;

/// The reference page for the methods `routes` exposes.
#[must_use]
pub fn markdown(routes: &Routes) -> String {
    let mut methods: BTreeMap<String, MethodDescriptor> = BTreeMap::new();
    for route in routes.iter() {
        methods
            .entry(route.grpc_path.clone())
            .or_insert_with(|| route.policy.method.clone());
    }
    let mut by_service: BTreeMap<String, Vec<MethodDescriptor>> = BTreeMap::new();
    for method in methods.into_values() {
        by_service
            .entry(method.parent_service().full_name().to_owned())
            .or_default()
            .push(method);
    }
    let mut page = String::from(
        "# API\n\nGenerated from the contracts in `proto/` by `safra docs reference`. Every \
         RPC below is public (served at the gateway over gRPC, grpc-web and REST); internal \
         RPCs are left out. REST bodies use the canonical proto3 JSON names shown with each \
         field; errors are `google.rpc.Status` with an `ErrorInfo` reason. The same surface \
         as OpenAPI 3.1 is `openapi.json` beside this page and `/openapi.json` on a running \
         gateway.\n",
    );
    let mut messages = Messages::default();
    for (service, mut methods) in by_service {
        methods.sort_by_key(MethodDescriptor::index);
        let descriptor = &methods[0].parent_service();
        let _ = write!(page, "\n## {service}\n\n");
        push_comment(
            &mut page,
            &comment(
                descriptor.parent_file().file_descriptor_proto(),
                descriptor.path(),
            ),
        );
        for method in methods {
            method_section(&mut page, &method, &mut messages);
        }
    }
    messages.render(&mut page);
    page
}

fn push_comment(page: &mut String, text: &str) {
    if !text.is_empty() {
        page.push_str(text);
        page.push_str("\n\n");
    }
}

fn anchor(full_name: &str) -> String {
    format!("type-{}", full_name.replace('.', "-").to_lowercase())
}

fn link(full_name: &str) -> String {
    format!("[`{full_name}`](#{})", anchor(full_name))
}

fn method_section(page: &mut String, method: &MethodDescriptor, messages: &mut Messages) {
    let _ = write!(page, "### {}\n\n", method.name());
    push_comment(
        page,
        &comment(method.parent_file().file_descriptor_proto(), method.path()),
    );
    for binding in contract::http_bindings(method) {
        let body = match binding.body.as_str() {
            "" => String::new(),
            "*" => " (body: the request)".to_owned(),
            field => format!(" (body: `{field}`)"),
        };
        let _ = writeln!(page, "- REST: `{} {}`{body}", binding.method, binding.path);
    }
    let _ = writeln!(
        page,
        "- gRPC: `/{}/{}`{}",
        method.parent_service().full_name(),
        method.name(),
        if method.is_server_streaming() {
            " (server streaming)"
        } else {
            ""
        }
    );
    let _ = writeln!(page, "- Who may call: {}", access(method));
    if let Some(key) = contract::idempotency_key_field(method) {
        let _ = writeln!(
            page,
            "- Idempotent: retries with the same `{key}` return the first outcome"
        );
    }
    let _ = write!(
        page,
        "- Request: {}; response: {}\n\n",
        link(method.input().full_name()),
        link(method.output().full_name())
    );
    messages.add(&method.input());
    messages.add(&method.output());
}

fn access(method: &MethodDescriptor) -> String {
    let Some(authorization) = contract::authorization(method) else {
        return "nobody (no declaration)".to_owned();
    };
    match authorization.access() {
        Access::Public => "anyone; a token that is sent is verified".to_owned(),
        Access::SignedIn => "any signed-in user (`authorization: Bearer <token>`)".to_owned(),
        Access::Roles => format!(
            "signed-in users with role {}",
            authorization.roles.join(" or ")
        ),
        Access::Internal => format!("mesh services {}", authorization.callers.join(", ")),
        Access::Unspecified => "nobody (unspecified)".to_owned(),
    }
}

/// Every message and enum the reference mentions, each described once.
#[derive(Default)]
struct Messages {
    messages: BTreeMap<String, MessageDescriptor>,
    enums: BTreeMap<String, EnumDescriptor>,
    seen: BTreeSet<String>,
}

impl Messages {
    fn add(&mut self, message: &MessageDescriptor) {
        if !self.seen.insert(message.full_name().to_owned()) {
            return;
        }
        self.messages
            .insert(message.full_name().to_owned(), message.clone());
        for field in message.fields() {
            match field.kind() {
                Kind::Message(nested) => self.add(&nested),
                Kind::Enum(enumeration) => {
                    self.enums
                        .insert(enumeration.full_name().to_owned(), enumeration);
                }
                _ => {}
            }
        }
    }

    fn render(&self, page: &mut String) {
        page.push_str("\n## Messages\n");
        for (name, message) in &self.messages {
            let _ = write!(page, "\n### <a id=\"{}\"></a>`{name}`\n\n", anchor(name));
            push_comment(
                page,
                &comment(
                    message.parent_file().file_descriptor_proto(),
                    message.path(),
                ),
            );
            if message.fields().len() == 0 {
                page.push_str("No fields.\n");
                continue;
            }
            page.push_str("| field (JSON) | type | rules | meaning |\n|---|---|---|---|\n");
            for field in message.fields() {
                let rules = contract::field_rules(&field)
                    .map(|rules| describe_rules(&rules))
                    .unwrap_or_default();
                let meaning = comment(field.parent_file().file_descriptor_proto(), field.path());
                let _ = writeln!(
                    page,
                    "| `{}` (`{}`) | {} | {} | {} |",
                    field.name(),
                    field.json_name(),
                    type_name(&field),
                    cell(&rules),
                    cell(&meaning)
                );
            }
        }
        page.push_str("\n## Enums\n");
        for (name, enumeration) in &self.enums {
            let _ = write!(page, "\n### <a id=\"{}\"></a>`{name}`\n\n", anchor(name));
            push_comment(
                page,
                &comment(
                    enumeration.parent_file().file_descriptor_proto(),
                    enumeration.path(),
                ),
            );
            page.push_str("| value | number | meaning |\n|---|---|---|\n");
            for value in enumeration.values() {
                let meaning = comment(value.parent_file().file_descriptor_proto(), value.path());
                let _ = writeln!(
                    page,
                    "| `{}` | {} | {} |",
                    value.name(),
                    value.number(),
                    cell(&meaning)
                );
            }
        }
    }
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn type_name(field: &FieldDescriptor) -> String {
    let base = match field.kind() {
        Kind::Message(message) => link(message.full_name()),
        Kind::Enum(enumeration) => link(enumeration.full_name()),
        other => format!("`{other:?}`").to_lowercase(),
    };
    if field.is_map() {
        format!("map of {base}")
    } else if field.is_list() {
        format!("list of {base}")
    } else {
        base
    }
}

/// The rules of a field in a few words (nested rules by field name).
fn describe_rules(rules: &FieldRules) -> String {
    let mut parts = Vec::new();
    if rules.required {
        parts.push("required".to_owned());
    }
    match (rules.min_len, rules.max_len) {
        (Some(min), Some(max)) => parts.push(format!("{min}–{max} characters")),
        (Some(min), None) => parts.push(format!("at least {min} characters")),
        (None, Some(max)) => parts.push(format!("at most {max} characters")),
        (None, None) => {}
    }
    match (rules.min, rules.max) {
        (Some(min), Some(max)) => parts.push(format!("{min} to {max}")),
        (Some(min), None) => parts.push(format!("at least {min}")),
        (None, Some(max)) => parts.push(format!("at most {max}")),
        (None, None) => {}
    }
    if !rules.pattern.is_empty() {
        parts.push(format!("matches `{}`", rules.pattern));
    }
    match rules.format() {
        StringFormat::Email => parts.push("an e-mail address".to_owned()),
        StringFormat::Uuid => parts.push("a UUID".to_owned()),
        StringFormat::CurrencyCode => parts.push("an ISO 4217 code".to_owned()),
        StringFormat::Unspecified => {}
    }
    match (rules.min_items, rules.max_items) {
        (Some(min), Some(max)) => parts.push(format!("{min}–{max} items")),
        (Some(min), None) => parts.push(format!("at least {min} items")),
        (None, Some(max)) => parts.push(format!("at most {max} items")),
        (None, None) => {}
    }
    for nested in &rules.fields {
        if let Some(inner) = &nested.rules {
            parts.push(format!("`{}`: {}", nested.field, describe_rules(inner)));
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_covers_every_public_rpc_and_what_it_uses() {
        let pool = safra::contract::descriptor::pool().expect("contracts");
        let verifier = std::sync::Arc::new(safra::identity::auth::TokenVerifier::new(
            safra::identity::auth::DEFAULT_ISSUER,
            std::sync::Arc::new(safra::identity::auth::StaticKeys(std::sync::Arc::default())),
        ));
        let gate = safra::contract::gate::Gate::new(&pool, verifier).expect("gate");
        let routes = Routes::new(gate.policies()).expect("routes");
        let page = markdown(&routes);
        for expected in [
            "### Invest",
            "- REST: `POST /v1/offerings/{offering_id}:invest` (body: the request)",
            "- Who may call: signed-in users with role investor",
            "retries with the same `idempotency_key`",
            "<a id=\"type-safra-marketplace-v1-investrequest\"></a>",
            "| `idempotency_key` (`idempotencyKey`) |",
            "`amount_minor`: 1 to 1000000000000",
            "`OFFERING_STATUS_FUNDED`",
        ] {
            assert!(page.contains(expected), "missing {expected:?}");
        }
        assert!(!page.contains("### Debit"), "internal RPCs stay out");
        // Every link points at an anchor the page defines.
        let anchors: BTreeSet<&str> = page
            .match_indices("<a id=\"")
            .map(|(at, _)| {
                let rest = &page[at + 7..];
                &rest[..rest.find('"').unwrap_or(0)]
            })
            .collect();
        for (at, _) in page.match_indices("](#") {
            let rest = &page[at + 3..];
            let target = &rest[..rest.find(')').unwrap_or(0)];
            assert!(
                anchors.contains(target),
                "a link to #{target} with no anchor"
            );
        }
    }
}
