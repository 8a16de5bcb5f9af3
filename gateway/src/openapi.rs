//! The OpenAPI 3.1 document of the REST surface, generated from the same
//! descriptors the gateway routes by: one operation per HTTP binding
//! (`operationId` `<Service>_<Rpc>`, `_2`, `_3` for additional bindings),
//! tagged by service; parameters from path variables and the query fields a
//! binding leaves free; schemas from messages with the field rules as
//! constraints; the authorization declaration as security requirements;
//! error responses as `google.rpc.Status`. Comments in the protos become
//! summaries and descriptions.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
};
use safra::{
    contract,
    options::v1::{Access, FieldRules, StringFormat},
};
use serde_json::{Map, Value, json};

use crate::routes::{Route, Routes};

use safra::contract::comment;

/// How deep query parameters follow nested messages.
const MAX_QUERY_DEPTH: usize = 3;

/// The document, as JSON; `status_pool` holds `google.rpc.Status`.
#[must_use]
pub fn document(status_pool: &DescriptorPool, routes: &Routes, version: &str) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut tags: BTreeMap<String, String> = BTreeMap::new();
    let mut bindings_seen: BTreeMap<String, usize> = BTreeMap::new();
    // Operations in the contracts' order of bindings, so ids are stable.
    let mut ordered: Vec<&Route> = routes.iter().collect();
    ordered.sort_by(|a, b| {
        (a.grpc_path.as_str(), binding_index(a)).cmp(&(b.grpc_path.as_str(), binding_index(b)))
    });
    for route in ordered {
        let method = &route.policy.method;
        let service = method.parent_service();
        tags.entry(service.name().to_owned()).or_insert_with(|| {
            comment(
                service.parent_file().file_descriptor_proto(),
                service.path(),
            )
        });
        let seen = bindings_seen.entry(route.grpc_path.clone()).or_insert(0);
        *seen += 1;
        let operation_id = if *seen == 1 {
            format!("{}_{}", service.name(), method.name())
        } else {
            format!("{}_{}_{}", service.name(), method.name(), seen)
        };
        let operation = operation(route, &operation_id, &mut schemas);
        paths
            .entry(openapi_path(&route.binding.path))
            .or_default()
            .insert(route.http_method.as_str().to_lowercase(), operation);
    }
    if let Some(status) = status_pool.get_message_by_name("google.rpc.Status") {
        schemas.add_message(&status);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Safra API",
            "version": version,
            "description": "REST/JSON surface of the Safra mesh, transcoded at the edge from the \
                gRPC contracts. Bodies use the canonical proto3 JSON mapping (lowerCamelCase \
                names, 64-bit integers as strings, enums by name, RFC 3339 timestamps); the \
                original proto field names are accepted too. Errors are google.rpc.Status as \
                JSON: {code, message, details}.",
        },
        "servers": [{"url": "/"}],
        "tags": tags
            .into_iter()
            .map(|(name, description)| {
                let mut tag = json!({"name": name});
                if !description.is_empty() {
                    tag["description"] = Value::String(description);
                }
                tag
            })
            .collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": schemas.into_json(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from POST /v1/accounts:login.",
                },
            },
            "responses": {
                "Error": {
                    "description": "A google.rpc.Status with details (BadRequest, ErrorInfo, RetryInfo).",
                    "content": {"application/json": {"schema": schema_ref("google.rpc.Status")}},
                },
            },
        },
    })
}

fn binding_index(route: &Route) -> usize {
    contract::http_bindings(&route.policy.method)
        .iter()
        .position(|binding| binding == &route.binding)
        .unwrap_or(usize::MAX)
}

/// `{name=shelves/*}` becomes `{name}`; the rest stays as it is.
fn openapi_path(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let inner = &rest[open + 1..open + close];
        let name = inner.split_once('=').map_or(inner, |(name, _)| name);
        out.push('{');
        out.push_str(name);
        out.push('}');
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

fn operation(route: &Route, operation_id: &str, schemas: &mut Schemas) -> Value {
    let method = &route.policy.method;
    let input = method.input();
    let description = comment(method.parent_file().file_descriptor_proto(), method.path());
    let summary = description.lines().next().unwrap_or_default().to_owned();
    let path_fields: Vec<String> = route.binding.path_variables();

    let mut parameters = Vec::new();
    for variable in &path_fields {
        let schema = field_at(&input, variable).map_or_else(
            || json!({"type": "string"}),
            |field| schemas.field_schema(&field),
        );
        parameters.push(json!({
            "name": variable,
            "in": "path",
            "required": true,
            "schema": schema,
        }));
    }
    if route.binding.body != "*" {
        let mut query = Vec::new();
        query_parameters(
            &input,
            "",
            &path_fields,
            &route.binding.body,
            0,
            schemas,
            &mut query,
        );
        parameters.extend(query);
    }

    let mut operation = json!({
        "operationId": operation_id,
        "tags": [method.parent_service().name()],
        "parameters": parameters,
    });
    if !summary.is_empty() {
        operation["summary"] = Value::String(summary);
        operation["description"] = Value::String(description);
    }
    match route.binding.body.as_str() {
        "" => {}
        "*" => {
            schemas.add_message(&input);
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema_ref(input.full_name())}},
            });
        }
        field => {
            if let Some(field) = input.get_field_by_name(field) {
                operation["requestBody"] = json!({
                    "required": true,
                    "content": {"application/json": {"schema": schemas.field_schema(&field)}},
                });
            }
        }
    }
    operation["responses"] = responses(route, method, schemas);
    let authorization = contract::authorization(method).unwrap_or_default();
    match authorization.access() {
        Access::Public => {
            // Anyone; a token, when sent, is still verified.
            operation["security"] = json!([{}, {"bearer": []}]);
        }
        Access::SignedIn => operation["security"] = json!([{"bearer": []}]),
        Access::Roles => {
            operation["security"] = json!([{"bearer": []}]);
            operation["x-safra-roles"] = json!(authorization.roles);
        }
        Access::Internal | Access::Unspecified => {}
    }
    operation
}

fn responses(route: &Route, method: &MethodDescriptor, schemas: &mut Schemas) -> Value {
    let output = method.output();
    let body_schema = if route.binding.response_body.is_empty() {
        schemas.add_message(&output);
        schema_ref(output.full_name())
    } else {
        output
            .get_field_by_name(&route.binding.response_body)
            .map_or_else(|| json!({}), |field| schemas.field_schema(&field))
    };
    let ok = if method.is_server_streaming() {
        json!({
            "description": "A stream: one JSON message per line (application/x-ndjson, a final \
                {\"error\": Status} line on failure) or Server-Sent Events with \
                Accept: text/event-stream (event: error on failure).",
            "content": {
                "application/x-ndjson": {"schema": body_schema},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        })
    } else {
        let mut ok = json!({
            "description": "OK",
            "content": {"application/json": {"schema": body_schema}},
        });
        if contract::http_cache(method).is_some() {
            ok["headers"] = json!({
                "Cache-Control": {
                    "description": "How long the answer may be cached, as the contract declares.",
                    "schema": {"type": "string"},
                },
            });
        }
        ok
    };
    let error = json!({"$ref": "#/components/responses/Error"});
    let mut responses = Map::new();
    responses.insert("200".into(), ok);
    responses.insert("400".into(), error.clone());
    let authorization = contract::authorization(method).unwrap_or_default();
    responses.insert("401".into(), error.clone());
    if authorization.access() == Access::Roles {
        responses.insert("403".into(), error.clone());
    }
    responses.insert("429".into(), error.clone());
    responses.insert("default".into(), error);
    Value::Object(responses)
}

/// The query parameters of the fields a binding leaves free: scalars,
/// enums and repeated scalars, nested messages as dotted names.
fn query_parameters(
    message: &MessageDescriptor,
    prefix: &str,
    path_fields: &[String],
    body_field: &str,
    depth: usize,
    schemas: &mut Schemas,
    out: &mut Vec<Value>,
) {
    for field in message.fields() {
        let name = format!("{prefix}{}", field.name());
        if path_fields.contains(&name) || (prefix.is_empty() && field.name() == body_field) {
            continue;
        }
        if field.is_map() {
            continue;
        }
        match field.kind() {
            Kind::Message(nested) if !is_string_like(&nested) => {
                if !field.is_list() && depth < MAX_QUERY_DEPTH {
                    query_parameters(
                        &nested,
                        &format!("{name}."),
                        path_fields,
                        body_field,
                        depth + 1,
                        schemas,
                        out,
                    );
                }
            }
            _ => {
                let mut parameter = json!({
                    "name": name,
                    "in": "query",
                    "required": false,
                    "schema": schemas.field_schema(&field),
                });
                if field.is_list() {
                    parameter["style"] = json!("form");
                    parameter["explode"] = json!(true);
                }
                let description =
                    comment(field.parent_file().file_descriptor_proto(), field.path());
                if !description.is_empty() {
                    parameter["description"] = Value::String(description);
                }
                out.push(parameter);
            }
        }
    }
}

fn field_at(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut current = message.clone();
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let field = current.get_field_by_name(part)?;
        if parts.peek().is_none() {
            return Some(field);
        }
        match field.kind() {
            Kind::Message(nested) => current = nested,
            _ => return None,
        }
    }
    None
}

fn is_string_like(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask"
    )
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The component schemas, each message and enum once.
#[derive(Default)]
struct Schemas {
    schemas: BTreeMap<String, Value>,
    visiting: BTreeSet<String>,
}

impl Schemas {
    fn into_json(self) -> Value {
        Value::Object(self.schemas.into_iter().collect())
    }

    fn add_message(&mut self, message: &MessageDescriptor) {
        let name = message.full_name().to_owned();
        if self.schemas.contains_key(&name) || !self.visiting.insert(name.clone()) {
            return;
        }
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            let mut schema = self.field_schema(&field);
            let description = comment(field.parent_file().file_descriptor_proto(), field.path());
            if !description.is_empty()
                && let Value::Object(object) = &mut schema
            {
                object.insert("description".into(), Value::String(description));
            }
            if contract::field_rules(&field).is_some_and(|rules| rules.required) {
                required.push(Value::String(field.json_name().to_owned()));
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        });
        if !required.is_empty() {
            schema["required"] = Value::Array(required);
        }
        let description = comment(
            message.parent_file().file_descriptor_proto(),
            message.path(),
        );
        if !description.is_empty() {
            schema["description"] = Value::String(description);
        }
        self.visiting.remove(&name);
        self.schemas.insert(name, schema);
    }

    fn add_enum(&mut self, descriptor: &EnumDescriptor) {
        let name = descriptor.full_name().to_owned();
        if self.schemas.contains_key(&name) {
            return;
        }
        let values: Vec<Value> = descriptor
            .values()
            .map(|value| Value::String(value.name().to_owned()))
            .collect();
        let mut schema = json!({"type": "string", "enum": values});
        let description = comment(
            descriptor.parent_file().file_descriptor_proto(),
            descriptor.path(),
        );
        if !description.is_empty() {
            schema["description"] = Value::String(description);
        }
        self.schemas.insert(name, schema);
    }

    /// A field's schema with its rules as constraints.
    fn field_schema(&mut self, field: &FieldDescriptor) -> Value {
        let rules = contract::field_rules(field);
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other,
            };
            return json!({
                "type": "object",
                "additionalProperties": self.kind_schema(&value, None),
            });
        }
        if field.is_list() {
            let mut schema = json!({
                "type": "array",
                "items": self.kind_schema(&field.kind(), rules.as_ref()),
            });
            if let Some(rules) = &rules {
                if let Some(min) = rules.min_items {
                    schema["minItems"] = json!(min);
                }
                if let Some(max) = rules.max_items {
                    schema["maxItems"] = json!(max);
                }
                if rules.required && rules.min_items.is_none() {
                    schema["minItems"] = json!(1);
                }
            }
            return schema;
        }
        self.kind_schema(&field.kind(), rules.as_ref())
    }

    fn kind_schema(&mut self, kind: &Kind, rules: Option<&FieldRules>) -> Value {
        let mut schema = match kind {
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
            }
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Enum(descriptor) => {
                self.add_enum(descriptor);
                schema_ref(descriptor.full_name())
            }
            Kind::Message(message) => match message.full_name() {
                "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
                "google.protobuf.Duration" => {
                    json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
                }
                "google.protobuf.Any" => json!({
                    "type": "object",
                    "properties": {"@type": {"type": "string"}},
                    "required": ["@type"],
                    "additionalProperties": true,
                }),
                name => {
                    self.add_message(message);
                    let reference = schema_ref(name);
                    match rules.filter(|rules| !rules.fields.is_empty()) {
                        Some(rules) => self.nested_constraints(&reference, message, rules),
                        None => reference,
                    }
                }
            },
        };
        if let (Some(rules), Value::Object(object)) = (rules, &mut schema) {
            constrain(object, kind, rules);
        }
        schema
    }

    /// A message referenced with extra rules on its fields in this place.
    fn nested_constraints(
        &mut self,
        reference: &Value,
        message: &MessageDescriptor,
        rules: &FieldRules,
    ) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for nested in &rules.fields {
            let (Some(field), Some(inner)) =
                (message.get_field_by_name(&nested.field), &nested.rules)
            else {
                continue;
            };
            let mut object = Map::new();
            constrain(&mut object, &field.kind(), inner);
            if inner.required {
                required.push(Value::String(field.json_name().to_owned()));
            }
            properties.insert(field.json_name().to_owned(), Value::Object(object));
        }
        let mut extra = json!({"properties": properties});
        if !required.is_empty() {
            extra["required"] = Value::Array(required);
        }
        json!({"allOf": [reference.clone(), extra]})
    }
}

/// The JSON Schema keywords for `rules` on a value of `kind`.
fn constrain(object: &mut Map<String, Value>, kind: &Kind, rules: &FieldRules) {
    match kind {
        Kind::String => {
            let min = rules.min_len.or(rules.required.then_some(1));
            if let Some(min) = min {
                object.insert("minLength".into(), json!(min));
            }
            if let Some(max) = rules.max_len {
                object.insert("maxLength".into(), json!(max));
            }
            if !rules.pattern.is_empty() {
                object.insert("pattern".into(), json!(rules.pattern));
            }
            match rules.format() {
                StringFormat::Email => {
                    object.insert("format".into(), json!("email"));
                }
                StringFormat::Uuid => {
                    object.insert("format".into(), json!("uuid"));
                }
                StringFormat::CurrencyCode => {
                    object.insert("pattern".into(), json!("^[A-Z]{3}$"));
                }
                StringFormat::Unspecified => {}
            }
        }
        Kind::Int32
        | Kind::Sint32
        | Kind::Sfixed32
        | Kind::Uint32
        | Kind::Fixed32
        | Kind::Double
        | Kind::Float => {
            if let Some(min) = rules.min {
                object.insert("minimum".into(), json!(min));
            }
            if let Some(max) = rules.max {
                object.insert("maximum".into(), json!(max));
            }
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            // JSON strings: the bounds are stated for readers and SDKs.
            if let Some(min) = rules.min {
                object.insert("x-minimum".into(), json!(min.to_string()));
            }
            if let Some(max) = rules.max {
                object.insert("x-maximum".into(), json!(max.to_string()));
            }
        }
        Kind::Bytes => {
            if rules.required {
                object.insert("minLength".into(), json!(1));
            }
        }
        Kind::Enum(descriptor) => {
            if rules.required {
                object.insert(
                    "not".into(),
                    json!({"enum": [descriptor.default_value().name()]}),
                );
            }
        }
        Kind::Bool | Kind::Message(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_drop_variable_patterns() {
        assert_eq!(openapi_path("/v1/{name=shelves/*}:x"), "/v1/{name}:x");
        assert_eq!(openapi_path("/v1/users/{user_id}"), "/v1/users/{user_id}");
    }
}
