//! The one validator of request messages, driven by the contracts' field
//! rules (`safra.options.v1.rules`): the gateway and every service run it
//! before any handler, and it reports every violated field, not the first.
//!
//! Semantics (also written in `options.proto`): `required` means non-empty
//! for strings, bytes and lists, present for messages, non-zero for enums and
//! scalars. On a string that is not required, an empty value is "not given"
//! and skips the other string rules. Integer bounds and item counts always
//! apply. Nested `fields` rules apply when the nested message is present, to
//! every item of a repeated one; rules declared on a nested message's own
//! fields apply too. Enum values must be defined, and a `google.type.Date`
//! that is given must be a real calendar date.

use std::collections::HashMap;

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};
use regex::Regex;

use crate::{
    contract,
    contract::status::Violation,
    options::v1::{FieldRules, StringFormat},
};

/// A validator with every rule of the contracts decoded and every pattern
/// compiled once, at start-up; a request only looks them up.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    rules: HashMap<String, FieldRules>,
    patterns: HashMap<String, Regex>,
}

/// A pattern of the contracts that does not compile (the contract lint
/// reports these too).
#[derive(Debug, thiserror::Error)]
#[error("{field}: pattern '{pattern}' does not compile: {reason}")]
pub struct BadPattern {
    /// The field declaring it.
    pub field: String,
    /// The pattern.
    pub pattern: String,
    /// The compiler's complaint.
    pub reason: String,
}

impl Validator {
    /// Compiles every pattern declared in `pool`.
    ///
    /// # Errors
    /// [`BadPattern`] for the first pattern that does not compile.
    pub fn new(pool: &DescriptorPool) -> Result<Self, BadPattern> {
        let mut rules_by_field = HashMap::new();
        let mut patterns = HashMap::new();
        for message in pool.all_messages() {
            for field in message.fields() {
                if let Some(rules) = contract::field_rules(&field) {
                    collect_patterns(field.full_name(), &rules, &mut patterns)?;
                    rules_by_field.insert(field.full_name().to_owned(), rules);
                }
            }
        }
        Ok(Self {
            rules: rules_by_field,
            patterns,
        })
    }

    /// Every rule `message` breaks, with proto field paths.
    #[must_use]
    pub fn validate(&self, message: &DynamicMessage) -> Vec<Violation> {
        let mut violations = Vec::new();
        self.check_message(message, "", &[], &mut violations);
        violations
    }

    fn check_message(
        &self,
        message: &DynamicMessage,
        prefix: &str,
        overrides: &[crate::options::v1::NestedFieldRules],
        violations: &mut Vec<Violation>,
    ) {
        let descriptor = message.descriptor();
        let before = violations.len();
        for field in descriptor.fields() {
            let path = FieldPath {
                prefix,
                name: field.name(),
                index: None,
            };
            let own = self.rules.get(field.full_name());
            let merged;
            let mut rules = own;
            if let Some(nested) = overrides.iter().find(|nested| nested.field == field.name()) {
                // Rules given by the enclosing field add to (and may tighten) the field's own.
                merged = merge(own.cloned(), nested.rules.clone().unwrap_or_default());
                rules = Some(&merged);
            }
            self.check_field(message, &field, rules, &path, violations);
        }
        // A date whose parts already broke a rule is reported once, by that rule.
        if descriptor.full_name() == "google.type.Date" && violations.len() == before {
            check_date(message, prefix, violations);
        }
    }

    fn check_field(
        &self,
        message: &DynamicMessage,
        field: &FieldDescriptor,
        rules: Option<&FieldRules>,
        path: &FieldPath<'_>,
        violations: &mut Vec<Violation>,
    ) {
        let present = message.has_field(field);
        let value = message.get_field(field);
        let default_rules = FieldRules::default();
        let rules = rules.unwrap_or(&default_rules);

        if field.is_list() {
            let items = value.as_list().unwrap_or(&[]);
            check_items(items.len(), rules, path, violations);
            for (index, item) in items.iter().enumerate() {
                let item_path = FieldPath {
                    index: Some(index),
                    ..*path
                };
                self.check_value(field, item, rules, &item_path, true, violations);
            }
            return;
        }
        if field.is_map() {
            if rules.required && !present {
                violations.push(required(path));
            }
            return;
        }
        if matches!(field.kind(), Kind::Message(_)) && !present {
            if rules.required {
                violations.push(required(path));
            }
            return;
        }
        self.check_value(field, &value, rules, path, present, violations);
    }

    fn check_value(
        &self,
        field: &FieldDescriptor,
        value: &Value,
        rules: &FieldRules,
        path: &FieldPath<'_>,
        present: bool,
        violations: &mut Vec<Violation>,
    ) {
        match value {
            Value::String(text) => self.check_string(text, rules, path, violations),
            Value::Bytes(bytes) => {
                if rules.required && bytes.is_empty() {
                    violations.push(required(path));
                }
            }
            Value::Message(nested) => {
                self.check_message(nested, &path.render(), &rules.fields, violations);
            }
            Value::EnumNumber(number) => {
                if let Kind::Enum(descriptor) = field.kind() {
                    if descriptor.get_value(*number).is_none() {
                        violations.push(violation(
                            path,
                            format!("{number} is not a value of {}", descriptor.full_name()),
                            "UNDEFINED_ENUM_VALUE",
                        ));
                    } else if rules.required && *number == 0 {
                        violations.push(required(path));
                    }
                }
            }
            Value::Bool(flag) => {
                if rules.required && !flag {
                    violations.push(required(path));
                }
            }
            other => {
                if let Some(number) = integer(other) {
                    check_integer(number, rules, path, violations);
                } else if rules.required && !present {
                    violations.push(required(path));
                }
            }
        }
    }

    fn check_string(
        &self,
        text: &str,
        rules: &FieldRules,
        path: &FieldPath<'_>,
        violations: &mut Vec<Violation>,
    ) {
        if text.is_empty() {
            if rules.required {
                violations.push(required(path));
            }
            return;
        }
        // PostgreSQL's text cannot hold U+0000, and no field of ours means
        // it: refused everywhere, before it reaches a query as a 500.
        if text.contains('\0') {
            violations.push(violation(
                path,
                "must not contain the NUL character (U+0000)".to_owned(),
                "INVALID_CHARACTER",
            ));
        }
        let length = text.chars().count();
        if let Some(min) = rules.min_len
            && length < min as usize
        {
            violations.push(violation(
                path,
                format!("must be at least {min} characters long"),
                "TOO_SHORT",
            ));
        }
        if let Some(max) = rules.max_len
            && length > max as usize
        {
            violations.push(violation(
                path,
                format!("must be at most {max} characters long"),
                "TOO_LONG",
            ));
        }
        if !rules.pattern.is_empty() {
            let matches = self
                .patterns
                .get(&rules.pattern)
                .is_some_and(|pattern| pattern.is_match(text));
            if !matches {
                violations.push(violation(
                    path,
                    format!("must match {}", rules.pattern),
                    "PATTERN_MISMATCH",
                ));
            }
        }
        let format = StringFormat::try_from(rules.format).unwrap_or(StringFormat::Unspecified);
        let (valid, expected) = match format {
            StringFormat::Unspecified => (true, ""),
            StringFormat::Email => (is_email(text), "an e-mail address"),
            StringFormat::Uuid => (
                is_uuid(text),
                "a UUID like 123e4567-e89b-12d3-a456-426614174000",
            ),
            StringFormat::CurrencyCode => (
                text.len() == 3 && text.chars().all(|c| c.is_ascii_uppercase()),
                "an ISO 4217 currency code like BRL",
            ),
        };
        if !valid {
            violations.push(violation(
                path,
                format!("must be {expected}"),
                "INVALID_FORMAT",
            ));
        }
    }
}

fn collect_patterns(
    at: &str,
    rules: &FieldRules,
    patterns: &mut HashMap<String, Regex>,
) -> Result<(), BadPattern> {
    if !rules.pattern.is_empty() && !patterns.contains_key(&rules.pattern) {
        // The whole value must match, whatever anchors the pattern has.
        let compiled =
            Regex::new(&format!("^(?:{})$", rules.pattern)).map_err(|error| BadPattern {
                field: at.to_owned(),
                pattern: rules.pattern.clone(),
                reason: error.to_string(),
            })?;
        patterns.insert(rules.pattern.clone(), compiled);
    }
    for nested in &rules.fields {
        if let Some(nested_rules) = &nested.rules {
            collect_patterns(&format!("{at}.{}", nested.field), nested_rules, patterns)?;
        }
    }
    Ok(())
}

/// The field's own rules with the enclosing field's added on top.
fn merge(own: Option<FieldRules>, outer: FieldRules) -> FieldRules {
    let Some(mut merged) = own else {
        return outer;
    };
    merged.required |= outer.required;
    merged.min_len = outer.min_len.or(merged.min_len);
    merged.max_len = outer.max_len.or(merged.max_len);
    merged.min = outer.min.or(merged.min);
    merged.max = outer.max.or(merged.max);
    if !outer.pattern.is_empty() {
        merged.pattern = outer.pattern;
    }
    if outer.format != 0 {
        merged.format = outer.format;
    }
    merged.min_items = outer.min_items.or(merged.min_items);
    merged.max_items = outer.max_items.or(merged.max_items);
    merged.fields.extend(outer.fields);
    merged
}

fn check_items(
    count: usize,
    rules: &FieldRules,
    path: &FieldPath<'_>,
    violations: &mut Vec<Violation>,
) {
    if rules.required && count == 0 {
        violations.push(required(path));
    }
    if let Some(min) = rules.min_items
        && count < min as usize
    {
        violations.push(violation(
            path,
            format!("must have at least {min} items"),
            "TOO_FEW_ITEMS",
        ));
    }
    if let Some(max) = rules.max_items
        && count > max as usize
    {
        violations.push(violation(
            path,
            format!("must have at most {max} items"),
            "TOO_MANY_ITEMS",
        ));
    }
}

fn integer(value: &Value) -> Option<i128> {
    match value {
        Value::I32(number) => Some(i128::from(*number)),
        Value::I64(number) => Some(i128::from(*number)),
        Value::U32(number) => Some(i128::from(*number)),
        Value::U64(number) => Some(i128::from(*number)),
        _ => None,
    }
}

fn check_integer(
    number: i128,
    rules: &FieldRules,
    path: &FieldPath<'_>,
    violations: &mut Vec<Violation>,
) {
    if rules.required && number == 0 {
        violations.push(required(path));
        return;
    }
    if let Some(min) = rules.min
        && number < i128::from(min)
    {
        violations.push(violation(
            path,
            format!("must be at least {min}"),
            "BELOW_MINIMUM",
        ));
    }
    if let Some(max) = rules.max
        && number > i128::from(max)
    {
        violations.push(violation(
            path,
            format!("must be at most {max}"),
            "ABOVE_MAXIMUM",
        ));
    }
}

fn check_date(date: &DynamicMessage, path: &str, violations: &mut Vec<Violation>) {
    let part = |name: &str| {
        date.get_field_by_name(name)
            .and_then(|value| value.as_i32())
            .unwrap_or(0)
    };
    let (year, month, day) = (part("year"), part("month"), part("day"));
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    };
    if !(1..=9999).contains(&year) || !(1..=days_in_month).contains(&day) {
        violations.push(Violation {
            field: if path.is_empty() { "date" } else { path }.to_owned(),
            description: format!("{year:04}-{month:02}-{day:02} is not a calendar date"),
            reason: "INVALID_DATE",
        });
    }
}

/// `local@domain.tld`, without inner spaces, within RFC 5321's lengths;
/// surrounding white space is allowed, as services trim addresses when they
/// normalise them.
fn is_email(text: &str) -> bool {
    let text = text.trim();
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && domain.len() <= 253
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        && !local.contains('@')
        && domain.contains('.')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
}

/// The canonical hyphenated form, 8-4-4-4-12 hex digits.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(group, length)| {
            group.len() == length && group.chars().all(|c| c.is_ascii_hexdigit())
        })
}

/// Where a field is, rendered into `a.b[2].c` only when a violation names it
/// or a nested message needs it as a prefix (valid requests allocate none).
#[derive(Debug, Clone, Copy)]
struct FieldPath<'a> {
    prefix: &'a str,
    name: &'a str,
    index: Option<usize>,
}

impl FieldPath<'_> {
    fn render(&self) -> String {
        let mut path = if self.prefix.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}.{}", self.prefix, self.name)
        };
        if let Some(index) = self.index {
            path.push_str(&format!("[{index}]"));
        }
        path
    }
}

fn required(path: &FieldPath<'_>) -> Violation {
    violation(path, "is required".to_owned(), "REQUIRED")
}

fn violation(path: &FieldPath<'_>, description: String, reason: &'static str) -> Violation {
    Violation {
        field: path.render(),
        description,
        reason,
    }
}

/// The input message descriptor of every Safra method, by gRPC path
/// (`/safra.wallet.v1.WalletService/Deposit`).
#[must_use]
pub fn inputs_by_path(pool: &DescriptorPool) -> HashMap<String, MessageDescriptor> {
    contract::safra_methods(pool)
        .map(|method| {
            (
                format!("/{}/{}", method.parent_service().full_name(), method.name()),
                method.input(),
            )
        })
        .collect()
}
