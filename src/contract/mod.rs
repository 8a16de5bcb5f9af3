//! The contracts' declarations, read from the descriptor set: a method's
//! authorization, HTTP bindings, idempotency key and HTTP caching, and a
//! field's validation rules, decoded into the generated option types.
//!
//! [`check`] is the contract lint the build relies on: every public RPC has
//! an HTTP binding and an authorization, every internal one has no binding,
//! every rule fits its field and every name a declaration uses exists.
//!
//! Beside it, what the declarations drive: [`descriptor`] (the encoded
//! descriptor set), [`validate`] (the field rules), [`gate`] (authorization
//! and validation, shared by the services and the edge) and [`status`]
//! (errors as `google.rpc.Status`).

pub mod descriptor;
pub mod gate;
pub mod status;
pub mod validate;

use std::collections::BTreeSet;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ReflectMessage, Value,
};

use crate::{
    google::api::{HttpRule, http_rule::Pattern},
    options::v1::{Access, Authorization, FieldRules, HttpCache},
};

/// Full name of the method option holding [`Authorization`].
pub const AUTHORIZATION: &str = "safra.options.v1.authorization";
/// Full name of the method option naming the idempotency-key field.
pub const IDEMPOTENCY_KEY_FIELD: &str = "safra.options.v1.idempotency_key_field";
/// Full name of the method option holding [`HttpCache`].
pub const HTTP_CACHE: &str = "safra.options.v1.http_cache";
/// Full name of the field option holding [`FieldRules`].
pub const FIELD_RULES: &str = "safra.options.v1.rules";
/// Full name of the `google.api.http` method option.
pub const HTTP: &str = "google.api.http";

/// The JWT `role` claim values a declaration may name.
pub const ROLES: [&str; 3] = crate::identity::auth::ROLES;
/// The mesh identities an internal method may allow.
pub const CALLERS: [&str; 6] = crate::mesh::PROCESS_NAMES;

/// One HTTP binding of a method: verb, path template and body mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBinding {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or a custom verb.
    pub method: String,
    /// The path template, e.g. `/v1/offerings/{offering_id}:invest`.
    pub path: String,
    /// `""` (no body), `"*"` (the whole request) or a request field name.
    pub body: String,
    /// `""` (the whole response) or a response field name.
    pub response_body: String,
}

impl HttpBinding {
    fn from_rule(rule: &HttpRule) -> Option<Self> {
        let (method, path) = match rule.pattern.as_ref()? {
            Pattern::Get(path) => ("GET".to_owned(), path.clone()),
            Pattern::Put(path) => ("PUT".to_owned(), path.clone()),
            Pattern::Post(path) => ("POST".to_owned(), path.clone()),
            Pattern::Delete(path) => ("DELETE".to_owned(), path.clone()),
            Pattern::Patch(path) => ("PATCH".to_owned(), path.clone()),
            Pattern::Custom(custom) => (custom.kind.clone(), custom.path.clone()),
        };
        Some(Self {
            method,
            path,
            body: rule.body.clone(),
            response_body: rule.response_body.clone(),
        })
    }

    /// The field paths bound by `{variables}` in the path template.
    #[must_use]
    pub fn path_variables(&self) -> Vec<String> {
        let mut variables = Vec::new();
        let mut rest = self.path.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let inner = &rest[open + 1..open + close];
            let name = inner.split_once('=').map_or(inner, |(name, _)| name);
            variables.push(name.to_owned());
            rest = &rest[open + close + 1..];
        }
        variables
    }
}

/// Decodes a message-typed extension of `options` into its generated type.
fn extension<T: Message + Default>(options: &DynamicMessage, name: &str) -> Option<T> {
    let descriptor = options
        .descriptor()
        .parent_pool()
        .get_extension_by_name(name)?;
    if !options.has_extension(&descriptor) {
        return None;
    }
    match options.get_extension(&descriptor).as_ref() {
        Value::Message(message) => message.transcode_to().ok(),
        _ => None,
    }
}

/// The method's authorization declaration, if it has one.
#[must_use]
pub fn authorization(method: &MethodDescriptor) -> Option<Authorization> {
    extension(&method.options(), AUTHORIZATION)
}

/// The method's HTTP bindings: the primary rule, then additional bindings.
#[must_use]
pub fn http_bindings(method: &MethodDescriptor) -> Vec<HttpBinding> {
    let Some(rule) = extension::<HttpRule>(&method.options(), HTTP) else {
        return Vec::new();
    };
    std::iter::once(&rule)
        .chain(rule.additional_bindings.iter())
        .filter_map(HttpBinding::from_rule)
        .collect()
}

/// The request field that carries the idempotency key, if declared.
#[must_use]
pub fn idempotency_key_field(method: &MethodDescriptor) -> Option<String> {
    let options = method.options();
    let descriptor = options
        .descriptor()
        .parent_pool()
        .get_extension_by_name(IDEMPOTENCY_KEY_FIELD)?;
    if !options.has_extension(&descriptor) {
        return None;
    }
    options
        .get_extension(&descriptor)
        .as_str()
        .map(str::to_owned)
}

/// The method's HTTP caching declaration, if any.
#[must_use]
pub fn http_cache(method: &MethodDescriptor) -> Option<HttpCache> {
    extension(&method.options(), HTTP_CACHE)
}

/// The field's validation rules, if any.
#[must_use]
pub fn field_rules(field: &FieldDescriptor) -> Option<FieldRules> {
    extension(&field.options(), FIELD_RULES)
}

/// Every method of every Safra service (`safra.*` packages) in `pool`.
pub fn safra_methods(pool: &DescriptorPool) -> impl Iterator<Item = MethodDescriptor> + '_ {
    pool.services()
        .filter(|service| {
            service
                .package_name()
                .starts_with(crate::contract::descriptor::PACKAGE_PREFIX)
        })
        .flat_map(|service| service.methods().collect::<Vec<_>>())
}

/// The comment written above an element in its `.proto` file (at `path`
/// in the file's source info), lines trimmed; empty when there is none.
#[must_use]
pub fn comment(file: &prost_types::FileDescriptorProto, path: &[i32]) -> String {
    file.source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|location| location.path == path))
        .and_then(|location| location.leading_comments.as_deref())
        .map(|text| {
            text.lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// Every contract problem in `pool`, as sentences naming the element at fault.
/// An empty list means the contracts are sound.
#[must_use]
pub fn check(pool: &DescriptorPool) -> Vec<String> {
    let mut problems = Vec::new();
    for method in safra_methods(pool) {
        check_method(&method, &mut problems);
    }
    for message in pool.all_messages().filter(|message| {
        message
            .package_name()
            .starts_with(crate::contract::descriptor::PACKAGE_PREFIX)
    }) {
        for field in message.fields() {
            if let Some(rules) = field_rules(&field) {
                check_rules(&field, &rules, field.full_name(), &mut problems);
            }
        }
    }
    problems
}

fn check_method(method: &MethodDescriptor, problems: &mut Vec<String>) {
    let name = method.full_name();
    let bindings = http_bindings(method);
    match authorization(method) {
        None => problems.push(format!("{name}: no (safra.options.v1.authorization)")),
        Some(authorization) => {
            check_authorization(name, &authorization, !bindings.is_empty(), problems);
            check_caller_scopes(method, &authorization, problems);
        }
    }
    for binding in &bindings {
        check_binding(method, binding, problems);
    }
    if let Some(field) = idempotency_key_field(method) {
        match method.input().get_field_by_name(&field) {
            None => problems.push(format!(
                "{name}: idempotency_key_field '{field}' is not a field of {}",
                method.input().full_name()
            )),
            Some(found) if found.kind() != Kind::String || found.is_list() => problems.push(
                format!("{name}: idempotency_key_field '{field}' must be a singular string"),
            ),
            Some(_) => {}
        }
        if idempotency_level(method) != Some(IDEMPOTENT) {
            problems.push(format!(
                "{name}: declares an idempotency key but not idempotency_level = IDEMPOTENT"
            ));
        }
    }
    if let Some(cache) = http_cache(method) {
        if !bindings.iter().any(|binding| binding.method == "GET") {
            problems.push(format!("{name}: http_cache needs a GET binding"));
        }
        if cache.max_age_seconds <= 0 {
            problems.push(format!(
                "{name}: http_cache.max_age_seconds must be positive"
            ));
        }
    }
}

/// `google.protobuf.MethodOptions.IdempotencyLevel.IDEMPOTENT`.
const IDEMPOTENT: i32 = 2;

fn idempotency_level(method: &MethodDescriptor) -> Option<i32> {
    method
        .options()
        .get_field_by_name("idempotency_level")
        .and_then(|value| value.as_enum_number())
}

fn check_authorization(
    name: &str,
    authorization: &Authorization,
    exposed: bool,
    problems: &mut Vec<String>,
) {
    let access = authorization.access();
    let wants_roles = access == Access::Roles;
    let internal = access == Access::Internal;
    if access == Access::Unspecified {
        problems.push(format!("{name}: authorization.access is unspecified"));
    }
    if wants_roles == authorization.roles.is_empty() {
        problems.push(format!(
            "{name}: authorization.roles must be listed exactly when access is ACCESS_ROLES"
        ));
    }
    for role in &authorization.roles {
        if !ROLES.contains(&role.as_str()) {
            problems.push(format!("{name}: unknown role '{role}'"));
        }
    }
    if internal == authorization.callers.is_empty() {
        problems.push(format!(
            "{name}: authorization.callers must be listed exactly when access is ACCESS_INTERNAL"
        ));
    }
    for caller in &authorization.callers {
        if !CALLERS.contains(&caller.as_str()) {
            problems.push(format!("{name}: unknown caller '{caller}'"));
        }
    }
    match (internal, exposed) {
        (true, true) => problems.push(format!(
            "{name}: an internal method must not have a google.api.http binding"
        )),
        (false, false) if access != Access::Unspecified => problems.push(format!(
            "{name}: a public method needs a google.api.http binding"
        )),
        _ => {}
    }
}

/// Each caller scope names one of the method's callers, a singular enum
/// field of its request and values of that enum.
fn check_caller_scopes(
    method: &MethodDescriptor,
    authorization: &Authorization,
    problems: &mut Vec<String>,
) {
    let name = method.full_name();
    for scope in &authorization.caller_scopes {
        if !authorization.callers.contains(&scope.caller) {
            problems.push(format!(
                "{name}: caller scope for '{}', which is not among its callers",
                scope.caller
            ));
        }
        let Some(field) = method.input().get_field_by_name(&scope.field) else {
            problems.push(format!(
                "{name}: caller scope field '{}' is not a field of {}",
                scope.field,
                method.input().full_name()
            ));
            continue;
        };
        let Kind::Enum(enumeration) = field.kind() else {
            problems.push(format!(
                "{name}: caller scope field '{}' must be an enum",
                scope.field
            ));
            continue;
        };
        if field.is_list() {
            problems.push(format!(
                "{name}: caller scope field '{}' must be singular",
                scope.field
            ));
        }
        if scope.values.is_empty() {
            problems.push(format!(
                "{name}: caller scope for '{}' allows no value",
                scope.caller
            ));
        }
        for value in &scope.values {
            if enumeration.get_value_by_name(value).is_none() {
                problems.push(format!(
                    "{name}: caller scope value '{value}' is not a value of {}",
                    enumeration.full_name()
                ));
            }
        }
    }
}

fn check_binding(method: &MethodDescriptor, binding: &HttpBinding, problems: &mut Vec<String>) {
    let name = method.full_name();
    if !binding.path.starts_with('/') {
        problems.push(format!(
            "{name}: HTTP path '{}' must start with '/'",
            binding.path
        ));
    }
    for variable in binding.path_variables() {
        match resolve_path(&method.input(), &variable) {
            Some(field) if field.is_list() || matches!(field.kind(), Kind::Message(_)) => {
                problems.push(format!(
                    "{name}: path variable '{variable}' must be a singular scalar field"
                ));
            }
            Some(_) => {}
            None => problems.push(format!(
                "{name}: path variable '{variable}' is not a field of {}",
                method.input().full_name()
            )),
        }
    }
    match binding.body.as_str() {
        "" | "*" => {}
        field if method.input().get_field_by_name(field).is_none() => problems.push(format!(
            "{name}: body '{field}' is not a field of {}",
            method.input().full_name()
        )),
        _ => {}
    }
    if matches!(binding.method.as_str(), "GET" | "DELETE") && !binding.body.is_empty() {
        problems.push(format!(
            "{name}: a {} binding cannot have a body",
            binding.method
        ));
    }
    if !binding.response_body.is_empty()
        && method
            .output()
            .get_field_by_name(&binding.response_body)
            .is_none()
    {
        problems.push(format!(
            "{name}: response_body '{}' is not a field of {}",
            binding.response_body,
            method.output().full_name()
        ));
    }
}

/// Follows a dotted field path (`offering.id`) through nested messages.
fn resolve_path(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut current = message.clone();
    let mut found = None;
    for segment in path.split('.') {
        let field = current.get_field_by_name(segment)?;
        if let Kind::Message(nested) = field.kind() {
            current = nested;
        }
        found = Some(field);
    }
    found
}

fn is_integer(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Int32
            | Kind::Int64
            | Kind::Uint32
            | Kind::Uint64
            | Kind::Sint32
            | Kind::Sint64
            | Kind::Fixed32
            | Kind::Fixed64
            | Kind::Sfixed32
            | Kind::Sfixed64
    )
}

fn check_rules(field: &FieldDescriptor, rules: &FieldRules, at: &str, problems: &mut Vec<String>) {
    let kind = field.kind();
    let string = kind == Kind::String;
    let mut misplaced = Vec::new();
    if !string && (rules.min_len.is_some() || rules.max_len.is_some()) {
        misplaced.push("min_len/max_len (strings only)");
    }
    if !string && (!rules.pattern.is_empty() || rules.format != 0) {
        misplaced.push("pattern/format (strings only)");
    }
    if !is_integer(&kind) && (rules.min.is_some() || rules.max.is_some()) {
        misplaced.push("min/max (integers only)");
    }
    if !field.is_list() && (rules.min_items.is_some() || rules.max_items.is_some()) {
        misplaced.push("min_items/max_items (repeated fields only)");
    }
    if !rules.fields.is_empty() && !matches!(kind, Kind::Message(_)) {
        misplaced.push("fields (message fields only)");
    }
    for rule in misplaced {
        problems.push(format!("{at}: rule {rule} does not fit this field"));
    }
    if let (Some(min), Some(max)) = (rules.min_len, rules.max_len)
        && min > max
    {
        problems.push(format!("{at}: min_len {min} exceeds max_len {max}"));
    }
    if let (Some(min), Some(max)) = (rules.min, rules.max)
        && min > max
    {
        problems.push(format!("{at}: min {min} exceeds max {max}"));
    }
    if let (Some(min), Some(max)) = (rules.min_items, rules.max_items)
        && min > max
    {
        problems.push(format!("{at}: min_items {min} exceeds max_items {max}"));
    }
    if !rules.pattern.is_empty()
        && let Err(error) = regex::Regex::new(&rules.pattern)
    {
        problems.push(format!("{at}: pattern does not compile: {error}"));
    }
    if let Kind::Message(nested) = kind {
        let mut seen = BTreeSet::new();
        for nested_rule in &rules.fields {
            let nested_at = format!("{at}.{}", nested_rule.field);
            if !seen.insert(nested_rule.field.as_str()) {
                problems.push(format!("{nested_at}: rules given twice"));
            }
            match nested.get_field_by_name(&nested_rule.field) {
                None => problems.push(format!(
                    "{at}: rule names '{}', which is not a field of {}",
                    nested_rule.field,
                    nested.full_name()
                )),
                Some(nested_field) => {
                    let nested_rules = nested_rule.rules.clone().unwrap_or_default();
                    check_rules(&nested_field, &nested_rules, &nested_at, problems);
                }
            }
        }
    }
}
