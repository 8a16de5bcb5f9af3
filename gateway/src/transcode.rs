//! REST/JSON to protobuf and back, driven by the descriptors: the request
//! message is the JSON body (`body: "*"` or one field), merged with the path
//! variables and the query parameters (`a.b=1`, repeated by repetition,
//! proto or JSON names, enums by name or number); unknown names are errors.
//! Responses are canonical proto3 JSON, the whole message or its
//! `response_body` field.

use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions,
};
use serde_json::{Map, Value};

/// A request that cannot become the method's message, for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TranscodeError(pub String);

fn error(message: impl Into<String>) -> TranscodeError {
    TranscodeError(message.into())
}

/// Where a JSON body names one field twice: `amount` twice, or `amountMinor`
/// beside `amount_minor`. Refused rather than letting the last one win, so
/// that what a proxy or a log read is what the service acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is given more than once")]
pub struct DuplicateField(pub String);

/// Why a request's parts do not make its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A field named twice in the body (its path, proto names).
    #[error(transparent)]
    Duplicate(#[from] DuplicateField),
    /// Anything else.
    #[error(transparent)]
    Invalid(#[from] TranscodeError),
}

/// How the request's parts fill its message.
#[derive(Debug)]
pub struct RequestParts<'a> {
    /// The binding's `body`: `""`, `"*"` or a field name.
    pub body_field: &'a str,
    /// The JSON body, if the binding takes one.
    pub body: &'a [u8],
    /// Path variables: field path and decoded value.
    pub path: &'a [(String, String)],
    /// The raw query string, if any.
    pub query: Option<&'a str>,
}

/// Builds the request message of `input` from the parts of an HTTP request.
///
/// # Errors
/// Malformed JSON, unknown fields or parameters, values of the wrong type.
pub fn request_message(
    input: &MessageDescriptor,
    parts: &RequestParts<'_>,
) -> Result<DynamicMessage, RequestError> {
    let mut message = match parts.body_field {
        "" => DynamicMessage::new(input.clone()),
        "*" => {
            let json = body_json(parts.body)?;
            once_each(input, &json, "")?;
            from_json(input, json)?
        }
        field => {
            let descriptor = input
                .get_field_by_name(field)
                .ok_or_else(|| error(format!("the binding's body field '{field}' is unknown")))?;
            let json = body_json(parts.body)?;
            if let Kind::Message(nested) = descriptor.kind() {
                once_each(&nested, &json, descriptor.name())?;
            }
            let mut wrapper = Map::new();
            wrapper.insert(descriptor.name().to_owned(), json);
            from_json(input, Value::Object(wrapper))?
        }
    };
    // Path variables and query parameters become one JSON object, typed
    // leaf by leaf from the descriptors, merged over the body: path values win.
    let mut bound = Map::new();
    for (field_path, value) in parts.path {
        insert(input, &mut bound, field_path, value, false)
            .map_err(|problem| error(format!("path variable '{field_path}': {problem}")))?;
    }
    if let Some(query) = parts.query.filter(|query| !query.is_empty()) {
        if parts.body_field == "*" {
            return Err(error(
                "this method takes every field from the body; query parameters are not accepted",
            )
            .into());
        }
        for (name, value) in query_pairs(query)? {
            let top = name.split('.').next().unwrap_or_default();
            let field = find_field(input, top);
            if field
                .as_ref()
                .is_some_and(|field| field.name() == parts.body_field)
            {
                return Err(error(format!("query parameter '{name}' names the body field")).into());
            }
            if parts.path.iter().any(|(path, _)| {
                path == &name || field.as_ref().is_some_and(|field| path == field.name())
            }) {
                return Err(
                    error(format!("query parameter '{name}' names a path variable")).into(),
                );
            }
            insert(input, &mut bound, &name, &value, true)
                .map_err(|problem| error(format!("query parameter '{name}': {problem}")))?;
        }
    }
    if !bound.is_empty() {
        let overlay = from_json(input, Value::Object(bound))?;
        message
            .merge(overlay.encode_to_vec().as_slice())
            .map_err(|problem| error(problem.to_string()))?;
    }
    Ok(message)
}

fn body_json(body: &[u8]) -> Result<Value, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let repeated = std::cell::RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = serde::de::DeserializeSeed::deserialize(
        UniqueKeys {
            path: String::new(),
            repeated: &repeated,
        },
        &mut deserializer,
    )
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, repeated.into_inner()) {
        (_, Some(path)) => Err(DuplicateField(path).into()),
        (Ok(value), None) => Ok(value),
        (Err(problem), None) => Err(error(format!("the body is not valid JSON: {problem}")).into()),
    }
}

/// JSON into a [`Value`], refusing an object that repeats a key (serde_json
/// keeps the last); the path of the first repeated key lands in `repeated`.
struct UniqueKeys<'a> {
    path: String,
    repeated: &'a std::cell::RefCell<Option<String>>,
}

impl UniqueKeys<'_> {
    fn at(&self, step: &str) -> Self {
        Self {
            path: if self.path.is_empty() {
                step.to_owned()
            } else {
                format!("{}.{step}", self.path)
            },
            repeated: self.repeated,
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = items.next_element_seed(self.at(&format!("[{}]", values.len())))? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = entries.next_key::<String>()? {
            let seed = self.at(&key);
            if object.contains_key(&key) {
                let path = seed.path;
                *self.repeated.borrow_mut() = Some(path.clone());
                return Err(serde::de::Error::custom(format!(
                    "'{path}' is given more than once"
                )));
            }
            let value = entries.next_value_seed(seed)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Refuses an object of `message` that names a field by both its proto and
/// its JSON name, at any depth the descriptors describe (well-known types,
/// whose JSON is not an object of fields, are left to their parser).
fn once_each(message: &MessageDescriptor, json: &Value, path: &str) -> Result<(), DuplicateField> {
    let Value::Object(object) = json else {
        return Ok(());
    };
    if message.full_name().starts_with("google.protobuf.") {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    for (key, value) in object {
        let Some(field) = find_field(message, key) else {
            continue;
        };
        let field_path = if path.is_empty() {
            field.name().to_owned()
        } else {
            format!("{path}.{}", field.name())
        };
        if !seen.insert(field.number()) {
            return Err(DuplicateField(field_path));
        }
        let Kind::Message(nested) = field.kind() else {
            continue;
        };
        match value {
            Value::Array(items) if field.is_list() => {
                for (index, item) in items.iter().enumerate() {
                    once_each(&nested, item, &format!("{field_path}[{index}]"))?;
                }
            }
            Value::Object(entries) if field.is_map() => {
                if let Some(value_field) = nested.map_entry_value_field().kind().as_message() {
                    for (entry, item) in entries {
                        once_each(value_field, item, &format!("{field_path}.{entry}"))?;
                    }
                }
            }
            _ => once_each(&nested, value, &field_path)?,
        }
    }
    Ok(())
}

fn from_json(input: &MessageDescriptor, json: Value) -> Result<DynamicMessage, TranscodeError> {
    DynamicMessage::deserialize_with_options(
        input.clone(),
        json,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|problem| error(problem.to_string()))
}

/// A field by its proto name or its JSON name.
fn find_field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_name(name)
        .or_else(|| message.get_field_by_json_name(name))
}

/// Sets `value` at `field_path` in `object` (proto names), converting the
/// text to the JSON the field's kind takes; repeated fields collect values.
fn insert(
    message: &MessageDescriptor,
    object: &mut Map<String, Value>,
    field_path: &str,
    value: &str,
    repeatable: bool,
) -> Result<(), String> {
    let (head, tail) = match field_path.split_once('.') {
        Some((head, tail)) => (head, Some(tail)),
        None => (field_path, None),
    };
    let field = find_field(message, head).ok_or_else(|| format!("no field '{head}'"))?;
    match (tail, field.kind()) {
        (Some(tail), Kind::Message(nested)) if !field.is_list() && !field.is_map() => {
            let entry = object
                .entry(field.name().to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(inner) = entry else {
                return Err(format!("'{head}' is set twice"));
            };
            insert(&nested, inner, tail, value, repeatable)
        }
        (Some(_), _) => Err(format!("'{head}' has no fields")),
        (None, kind) => {
            if field.is_map() {
                return Err(format!("'{head}' is a map and cannot be set from text"));
            }
            let leaf = leaf_json(&kind, value)?;
            if field.is_list() {
                if !repeatable {
                    return Err(format!("'{head}' is repeated"));
                }
                let entry = object
                    .entry(field.name().to_owned())
                    .or_insert_with(|| Value::Array(Vec::new()));
                match entry {
                    Value::Array(values) => values.push(leaf),
                    _ => return Err(format!("'{head}' is set twice")),
                }
            } else if object.insert(field.name().to_owned(), leaf).is_some() {
                return Err(format!("'{head}' is given more than once"));
            }
            Ok(())
        }
    }
}

/// The JSON that proto3's mapping reads as `text` for a field of `kind`.
fn leaf_json(kind: &Kind, text: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("'{text}' is not true or false")),
        },
        Kind::Enum(_) => match text.parse::<i64>() {
            Ok(number) => Value::from(number),
            Err(_) => Value::String(text.to_owned()),
        },
        // Numbers, strings, bytes (base64) and well-known types written as
        // strings (Timestamp, Duration) all take a JSON string.
        Kind::Message(message) if !is_string_like(message) => {
            return Err("a message cannot be set from text; send it in the body".into());
        }
        _ => Value::String(text.to_owned()),
    })
}

fn is_string_like(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.BytesValue"
    )
}

/// `a=1&b.c=x%20y&a=2` as decoded pairs (`+` is a space).
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, TranscodeError> {
    let decode = |text: &str| {
        let spaced = text.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| error("the query string is not UTF-8"))
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// The canonical JSON of an answer's wire bytes (an `output` message): the
/// whole message or its `response_body` field, written straight from the
/// bytes where `writer` can, else through a decoded message.
///
/// # Errors
/// Bytes that are not an `output` message, or values with no JSON form (a
/// timestamp out of range).
pub fn answer_json(
    writer: &crate::wire_json::AnswerWriter,
    output: &MessageDescriptor,
    wire: &[u8],
    response_body: &str,
) -> Result<Vec<u8>, TranscodeError> {
    if let Some(json) = writer.to_json(output, wire, response_body) {
        return Ok(json);
    }
    let message = DynamicMessage::decode(output.clone(), wire)
        .map_err(|problem| error(format!("decoding the response: {problem}")))?;
    response_json(&message, response_body)
}

/// The canonical JSON of a response: the whole message, or its
/// `response_body` field. Default values are written out, so that a client
/// sees every field of the schema.
///
/// # Errors
/// A `response_body` naming no field (the contract lint prevents it).
pub fn response_json(
    message: &DynamicMessage,
    response_body: &str,
) -> Result<Vec<u8>, TranscodeError> {
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut out = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::new(&mut out);
    if response_body.is_empty() {
        message
            .serialize_with_options(&mut serializer, &options)
            .map_err(|problem| error(problem.to_string()))?;
        return Ok(out);
    }
    let field = message
        .descriptor()
        .get_field_by_name(response_body)
        .ok_or_else(|| error(format!("the response has no field '{response_body}'")))?;
    // Serialise the one field through a message holding only it, then take
    // its value: the field keeps its own canonical mapping.
    let mut only = DynamicMessage::new(message.descriptor());
    only.set_field(&field, message.get_field(&field).into_owned());
    let whole = only
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|problem| error(problem.to_string()))?;
    let value = whole.get(field.json_name()).cloned().unwrap_or(Value::Null);
    serde_json::to_writer(&mut out, &value).map_err(|problem| error(problem.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register() -> MessageDescriptor {
        safra::contract::descriptor::pool()
            .expect("contracts")
            .get_message_by_name("safra.accounts.v1.RegisterRequest")
            .expect("RegisterRequest")
    }

    fn list_users() -> MessageDescriptor {
        safra::contract::descriptor::pool()
            .expect("contracts")
            .get_message_by_name("safra.accounts.v1.ListUsersRequest")
            .expect("ListUsersRequest")
    }

    fn parts<'a>(
        body_field: &'a str,
        body: &'a [u8],
        path: &'a [(String, String)],
        query: Option<&'a str>,
    ) -> RequestParts<'a> {
        RequestParts {
            body_field,
            body,
            path,
            query,
        }
    }

    #[test]
    fn a_body_takes_json_and_proto_names_and_refuses_unknown_fields() {
        let body =
            br#"{"email":"a@b.co","displayName":"Ana","role":"ROLE_INVESTOR","password":"x"}"#;
        let message = request_message(&register(), &parts("*", body, &[], None)).expect("ok");
        let json = String::from_utf8(response_json(&message, "").expect("json")).expect("utf8");
        assert!(json.contains(r#""displayName":"Ana""#), "{json}");
        let proto_names = br#"{"display_name":"Ana","role":1}"#;
        request_message(&register(), &parts("*", proto_names, &[], None)).expect("proto names");
        let unknown = request_message(&register(), &parts("*", br#"{"nope":1}"#, &[], None))
            .expect_err("unknown field");
        assert!(unknown.to_string().contains("nope"), "{unknown}");
        let malformed =
            request_message(&register(), &parts("*", b"{", &[], None)).expect_err("malformed");
        assert!(
            malformed.to_string().contains("not valid JSON"),
            "{malformed}"
        );
        for twice in [
            &br#"{"email":"a@b.co","email":"c@d.co"}"#[..],
            br#"{"displayName":"Ana","display_name":"Bo"}"#,
        ] {
            let refused = request_message(&register(), &parts("*", twice, &[], None));
            let expected = if twice.starts_with(br#"{"email""#) {
                "email"
            } else {
                "display_name"
            };
            assert_eq!(
                refused.expect_err("named twice"),
                RequestError::Duplicate(DuplicateField(expected.to_owned()))
            );
        }
        let typed = request_message(&register(), &parts("*", br#"{"role":true}"#, &[], None))
            .expect_err("wrong type");
        assert!(!typed.to_string().is_empty());
    }

    #[test]
    fn query_parameters_fill_fields_by_either_name_and_refuse_unknown_ones() {
        let message = request_message(
            &list_users(),
            &parts(
                "",
                b"",
                &[],
                Some("pageSize=20&role=ROLE_ADMIN&page_token=abc"),
            ),
        )
        .expect("ok");
        let json = String::from_utf8(response_json(&message, "").expect("json")).expect("utf8");
        assert!(json.contains(r#""pageSize":20"#), "{json}");
        assert!(json.contains(r#""role":"ROLE_ADMIN""#), "{json}");
        assert!(json.contains(r#""pageToken":"abc""#), "{json}");
        let by_number =
            request_message(&list_users(), &parts("", b"", &[], Some("role=3"))).expect("number");
        assert_ne!(
            String::from_utf8(response_json(&by_number, "").expect("json")).expect("utf8"),
            json
        );
        let unknown = request_message(&list_users(), &parts("", b"", &[], Some("colour=red")))
            .expect_err("unknown");
        assert!(unknown.to_string().contains("colour"), "{unknown}");
        let wrong = request_message(&list_users(), &parts("", b"", &[], Some("pageSize=many")))
            .expect_err("not a number");
        assert!(!wrong.to_string().is_empty());
        let body_method = request_message(&register(), &parts("*", b"{}", &[], Some("email=x")))
            .expect_err("body takes all");
        assert!(body_method.to_string().contains("query"), "{body_method}");
    }
}
