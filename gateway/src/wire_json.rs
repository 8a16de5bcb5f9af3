//! A service's answer, as protobuf wire bytes, written straight to its
//! canonical JSON: no intermediate message is built. Decoding into a
//! `DynamicMessage` first and serialising that was most of the gateway's
//! time on a list (a map of boxed values per message, a `String` per text
//! field, a descriptor lookup per field); this walks the bytes once, guided
//! by a plan of each message computed from the descriptors at start-up
//! (field numbers, JSON names already quoted, defaults already written,
//! enum names).
//!
//! The output is byte for byte what `transcode::response_json` writes for the
//! same message (every field of the schema, defaults included, in field
//! number order; 64-bit integers as strings; enums by name). Whatever this
//! writer does not handle exactly, it declines (`None`) and the caller takes
//! the general path: a map field with entries, a singular message field sent
//! more than once (protobuf merges those), two members of one oneof, a
//! well-known type other than Timestamp and Duration, a proto2 file, a
//! message others extend, groups, malformed bytes (the general path reports
//! those).

use std::collections::HashMap;

use base64::{Engine as _, prelude::BASE64_STANDARD};
use prost::Message as _;
use prost_reflect::{DescriptorPool, EnumDescriptor, Kind, MessageDescriptor, Syntax};

/// Deeper nesting than this is left to the general path (and its limit).
const MAX_DEPTH: u32 = 32;

// The ranges the canonical mapping accepts (those of prost-reflect's own
// serialiser, so both paths refuse the same values).
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;
const MAX_DURATION_NANOS: u32 = 999_999_999;

/// Writes answers of any message of one descriptor pool as JSON.
#[derive(Debug, Default)]
pub struct AnswerWriter {
    plans: Vec<Plan>,
    by_name: HashMap<String, usize>,
    enums: Vec<EnumPlan>,
}

/// How one message is written.
#[derive(Debug)]
enum Plan {
    Fields(FieldsPlan),
    Timestamp,
    Duration,
    /// Left to the general path.
    Declined,
}

#[derive(Debug)]
struct FieldsPlan {
    /// In field number order.
    fields: Vec<FieldPlan>,
    /// Whether two members of a real oneof may appear.
    has_oneofs: bool,
}

#[derive(Debug)]
struct FieldPlan {
    number: u32,
    /// The proto name, for `response_body`.
    name: String,
    /// `"jsonName":`, escaped.
    key: Box<[u8]>,
    value: ValuePlan,
    shape: Shape,
    /// Its real (not synthetic) oneof, numbered within the message.
    oneof: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Written whether sent or not (its default when not).
    Single,
    /// Written only when sent (a message, an optional, a oneof member).
    Present,
    List,
    Map,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValuePlan {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    Enum(usize),
    Message(usize),
}

#[derive(Debug)]
struct EnumPlan {
    /// Number and `"NAME"`, sorted by number.
    names: Vec<(i32, Box<[u8]>)>,
    /// The JSON of its default value.
    default: Box<[u8]>,
    /// `google.protobuf.NullValue` (JSON null): declined.
    null_value: bool,
}

/// One occurrence of a field on the wire.
#[derive(Debug, Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Delimited(&'a [u8]),
}

/// The occurrences of one message's fields, by position in its plan; kept
/// in one buffer for a whole answer (each message pushes its own and
/// truncates them when done).
type Scratch<'a> = Vec<(u16, Raw<'a>)>;

impl AnswerWriter {
    /// Plans every message of `pool`.
    #[must_use]
    pub fn new(pool: &DescriptorPool) -> Self {
        let mut writer = Self::default();
        for (index, message) in pool.all_messages().enumerate() {
            writer.by_name.insert(message.full_name().to_owned(), index);
        }
        let mut enum_index = HashMap::new();
        for message in pool.all_messages() {
            let plan = writer.plan(&message, &mut enum_index);
            writer.plans.push(plan);
        }
        writer
    }

    fn plan(&mut self, message: &MessageDescriptor, enums: &mut HashMap<String, usize>) -> Plan {
        match message.full_name() {
            "google.protobuf.Timestamp" => return Plan::Timestamp,
            "google.protobuf.Duration" => return Plan::Duration,
            name if name.starts_with("google.protobuf.") => return Plan::Declined,
            _ => {}
        }
        if message.parent_file().syntax() != Syntax::Proto3 || message.extensions().len() > 0 {
            return Plan::Declined;
        }
        let oneofs: Vec<_> = message
            .oneofs()
            .filter(|oneof| !oneof.is_synthetic())
            .collect();
        let mut fields = Vec::new();
        for field in message.fields() {
            let Some(value) = self.value_plan(&field.kind(), enums) else {
                return Plan::Declined;
            };
            let shape = if field.is_map() {
                Shape::Map
            } else if field.is_list() {
                Shape::List
            } else if field.supports_presence() {
                Shape::Present
            } else {
                Shape::Single
            };
            let mut key = Vec::new();
            if serde_json::to_writer(&mut key, field.json_name()).is_err() {
                return Plan::Declined;
            }
            key.push(b':');
            let oneof = field.containing_oneof().and_then(|own| {
                oneofs
                    .iter()
                    .position(|oneof| oneof.full_name() == own.full_name())
                    .and_then(|at| u16::try_from(at).ok())
            });
            fields.push(FieldPlan {
                number: field.number(),
                name: field.name().to_owned(),
                key: key.into(),
                value,
                shape,
                oneof,
            });
        }
        if u16::try_from(fields.len()).is_err() {
            return Plan::Declined;
        }
        Plan::Fields(FieldsPlan {
            fields,
            has_oneofs: !oneofs.is_empty(),
        })
    }

    fn value_plan(&mut self, kind: &Kind, enums: &mut HashMap<String, usize>) -> Option<ValuePlan> {
        Some(match kind {
            Kind::Double => ValuePlan::Double,
            Kind::Float => ValuePlan::Float,
            Kind::Int32 => ValuePlan::Int32,
            Kind::Int64 => ValuePlan::Int64,
            Kind::Uint32 => ValuePlan::Uint32,
            Kind::Uint64 => ValuePlan::Uint64,
            Kind::Sint32 => ValuePlan::Sint32,
            Kind::Sint64 => ValuePlan::Sint64,
            Kind::Fixed32 => ValuePlan::Fixed32,
            Kind::Fixed64 => ValuePlan::Fixed64,
            Kind::Sfixed32 => ValuePlan::Sfixed32,
            Kind::Sfixed64 => ValuePlan::Sfixed64,
            Kind::Bool => ValuePlan::Bool,
            Kind::String => ValuePlan::String,
            Kind::Bytes => ValuePlan::Bytes,
            Kind::Message(message) => ValuePlan::Message(*self.by_name.get(message.full_name())?),
            Kind::Enum(enumeration) => {
                let next = self.enums.len();
                let index = *enums
                    .entry(enumeration.full_name().to_owned())
                    .or_insert(next);
                if index == next {
                    self.enums.push(enum_plan(enumeration)?);
                }
                ValuePlan::Enum(index)
            }
        })
    }

    /// The JSON of an `output` message encoded in `wire`: the whole message,
    /// or only its `response_body` field's value. `None` when this writer
    /// declines it (see the module's comment).
    #[must_use]
    pub fn to_json(
        &self,
        output: &MessageDescriptor,
        wire: &[u8],
        response_body: &str,
    ) -> Option<Vec<u8>> {
        let plan = *self.by_name.get(output.full_name())?;
        // JSON runs about three times the wire size (names, quotes, defaults).
        let mut out = Vec::with_capacity(wire.len() * 4 + 64);
        let mut scratch = Scratch::with_capacity(64);
        if response_body.is_empty() {
            self.write_message(&mut out, plan, wire, 0, &mut scratch)?;
            return Some(out);
        }
        // Only one field's value, for scalars and lists of them: the general
        // path writes a message field through a `serde_json::Value` (its
        // keys sorted) and a float there through an f64 (its digits with
        // it), both left to it. Absent, a field is written as its default
        // (the general path sets it).
        let Plan::Fields(fields) = &self.plans[plan] else {
            return None;
        };
        let position = fields
            .fields
            .iter()
            .position(|field| field.name == response_body)?;
        let field = &fields.fields[position];
        if matches!(field.value, ValuePlan::Message(_) | ValuePlan::Float) {
            return None;
        }
        self.scan(fields, wire, &mut scratch)?;
        let own: Vec<Raw<'_>> = scratch
            .iter()
            .filter(|(at, _)| usize::from(*at) == position)
            .map(|(_, raw)| *raw)
            .collect();
        if own.is_empty() && field.shape == Shape::Present {
            out.extend_from_slice(self.default_of(field)?);
            return Some(out);
        }
        self.write_field(&mut out, field, &own, 1, &mut Scratch::new())?;
        Some(out)
    }

    /// Pushes the known fields' occurrences (by position), in wire order,
    /// stably sorted by position; unknown fields skipped (the canonical JSON
    /// leaves them out). Declines two members of one oneof: protobuf keeps
    /// only the last one sent.
    fn scan<'a>(
        &self,
        plan: &FieldsPlan,
        mut wire: &'a [u8],
        scratch: &mut Scratch<'a>,
    ) -> Option<()> {
        let start = scratch.len();
        let mut sorted = true;
        // The position of the field before, to find the next one at once
        // when fields come in order (as encoders write them).
        let mut hint = 0;
        while !wire.is_empty() {
            let key = varint(&mut wire)?;
            let number = u32::try_from(key >> 3).ok()?;
            if number == 0 {
                return None;
            }
            let raw = match key & 7 {
                0 => Raw::Varint(varint(&mut wire)?),
                1 => Raw::Fixed64(u64::from_le_bytes(take(&mut wire, 8)?.try_into().ok()?)),
                2 => {
                    let len = usize::try_from(varint(&mut wire)?).ok()?;
                    Raw::Delimited(take(&mut wire, len)?)
                }
                5 => Raw::Fixed32(u32::from_le_bytes(take(&mut wire, 4)?.try_into().ok()?)),
                // Groups (3, 4) and invalid wire types.
                _ => return None,
            };
            let position = if plan
                .fields
                .get(hint)
                .is_some_and(|field| field.number == number)
            {
                hint
            } else if plan
                .fields
                .get(hint + 1)
                .is_some_and(|field| field.number == number)
            {
                hint + 1
            } else {
                match plan
                    .fields
                    .binary_search_by_key(&number, |field| field.number)
                {
                    Ok(position) => position,
                    Err(_) => continue,
                }
            };
            hint = position;
            let position = u16::try_from(position).ok()?;
            if scratch[start..]
                .last()
                .is_some_and(|(last, _)| *last > position)
            {
                sorted = false;
            }
            scratch.push((position, raw));
        }
        let own = &mut scratch[start..];
        if !sorted {
            own.sort_by_key(|(position, _)| *position);
        }
        if plan.has_oneofs {
            // Sorted by position: a second member shows as a new position
            // in a oneof already met.
            let mut met: Vec<(u16, u16)> = Vec::new();
            for (position, _) in own.iter() {
                if let Some(oneof) = plan.fields[usize::from(*position)].oneof {
                    match met.iter().find(|(seen, _)| *seen == oneof) {
                        Some((_, member)) if member != position => return None,
                        Some(_) => {}
                        None => met.push((oneof, *position)),
                    }
                }
            }
        }
        Some(())
    }

    fn write_message<'a>(
        &self,
        out: &mut Vec<u8>,
        plan: usize,
        wire: &'a [u8],
        depth: u32,
        scratch: &mut Scratch<'a>,
    ) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let plan = match &self.plans[plan] {
            Plan::Fields(plan) => plan,
            Plan::Timestamp => return write_timestamp(out, wire),
            Plan::Duration => return write_duration(out, wire),
            Plan::Declined => return None,
        };
        let start = scratch.len();
        self.scan(plan, wire, scratch)?;
        let end = scratch.len();
        out.push(b'{');
        let mut first = true;
        let mut next = start;
        for (position, field) in plan.fields.iter().enumerate() {
            // This field's occurrences: scratch[from..next].
            let from = next;
            while next < end && usize::from(scratch[next].0) == position {
                next += 1;
            }
            if from == next && field.shape == Shape::Present {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&field.key);
            match (next - from, field.shape, field.value) {
                (0, Shape::Single, _) => out.extend_from_slice(self.default_of(field)?),
                (0, Shape::List, _) => out.extend_from_slice(b"[]"),
                (0, Shape::Map, _) => out.extend_from_slice(b"{}"),
                // Map entries would need the last-one-wins rule per key; a
                // message sent twice is merged by protobuf.
                (_, Shape::Map, _)
                | (2.., Shape::Single | Shape::Present, ValuePlan::Message(_)) => return None,
                (_, Shape::List, _) => {
                    out.push(b'[');
                    let mut first_element = true;
                    for at in from..next {
                        let raw = scratch[at].1;
                        self.write_element(
                            out,
                            field.value,
                            raw,
                            depth + 1,
                            &mut first_element,
                            scratch,
                        )?;
                    }
                    out.push(b']');
                }
                (_, _, value) => {
                    let last = scratch[next - 1].1;
                    self.write_value(out, value, last, depth + 1, scratch)?;
                }
            }
        }
        out.push(b'}');
        scratch.truncate(start);
        Some(())
    }

    /// One occurrence of a list: a value, or a packed run of numbers.
    fn write_element<'a>(
        &self,
        out: &mut Vec<u8>,
        value: ValuePlan,
        raw: Raw<'a>,
        depth: u32,
        first: &mut bool,
        scratch: &mut Scratch<'a>,
    ) -> Option<()> {
        let packed_width = match value {
            ValuePlan::String | ValuePlan::Bytes | ValuePlan::Message(_) => None,
            ValuePlan::Double | ValuePlan::Fixed64 | ValuePlan::Sfixed64 => Some(8),
            ValuePlan::Float | ValuePlan::Fixed32 | ValuePlan::Sfixed32 => Some(4),
            _ => Some(0),
        };
        let (Some(width), Raw::Delimited(mut packed)) = (packed_width, raw) else {
            if !std::mem::take(first) {
                out.push(b',');
            }
            return self.write_value(out, value, raw, depth, scratch);
        };
        while !packed.is_empty() {
            let element = match width {
                8 => Raw::Fixed64(u64::from_le_bytes(take(&mut packed, 8)?.try_into().ok()?)),
                4 => Raw::Fixed32(u32::from_le_bytes(take(&mut packed, 4)?.try_into().ok()?)),
                _ => Raw::Varint(varint(&mut packed)?),
            };
            if !std::mem::take(first) {
                out.push(b',');
            }
            self.write_value(out, value, element, depth, scratch)?;
        }
        Some(())
    }

    /// A field's value from its occurrences, for `response_body`.
    fn write_field<'a>(
        &self,
        out: &mut Vec<u8>,
        field: &FieldPlan,
        own: &[Raw<'a>],
        depth: u32,
        scratch: &mut Scratch<'a>,
    ) -> Option<()> {
        match (field.shape, own) {
            (Shape::Map, []) => out.extend_from_slice(b"{}"),
            (Shape::Map, _) => return None,
            (Shape::List, _) => {
                out.push(b'[');
                let mut first = true;
                for raw in own {
                    self.write_element(out, field.value, *raw, depth, &mut first, scratch)?;
                }
                out.push(b']');
            }
            (_, []) => out.extend_from_slice(self.default_of(field)?),
            (_, [.., last]) => self.write_value(out, field.value, *last, depth, scratch)?,
        }
        Some(())
    }

    /// A scalar field left out of the wire, as the canonical JSON writes it.
    fn default_of(&self, field: &FieldPlan) -> Option<&[u8]> {
        Some(match field.value {
            ValuePlan::Int64
            | ValuePlan::Sint64
            | ValuePlan::Sfixed64
            | ValuePlan::Uint64
            | ValuePlan::Fixed64 => b"\"0\"",
            ValuePlan::Int32
            | ValuePlan::Sint32
            | ValuePlan::Sfixed32
            | ValuePlan::Uint32
            | ValuePlan::Fixed32 => b"0",
            ValuePlan::Double | ValuePlan::Float => b"0.0",
            ValuePlan::Bool => b"false",
            ValuePlan::String | ValuePlan::Bytes => b"\"\"",
            ValuePlan::Enum(index) => &self.enums[index].default,
            ValuePlan::Message(_) => return None,
        })
    }

    /// One value from its occurrence; a wire type that does not fit the
    /// field is declined (the general path refuses it).
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss,
        reason = "protobuf's own conversions of varints and fixed-width words"
    )]
    fn write_value<'a>(
        &self,
        out: &mut Vec<u8>,
        value: ValuePlan,
        raw: Raw<'a>,
        depth: u32,
        scratch: &mut Scratch<'a>,
    ) -> Option<()> {
        match (value, raw) {
            (ValuePlan::Bool, Raw::Varint(value)) => {
                out.extend_from_slice(if value == 0 { b"false" } else { b"true" });
            }
            (ValuePlan::Int32, Raw::Varint(value)) => number(out, value as i32),
            (ValuePlan::Uint32, Raw::Varint(value)) => number(out, value as u32),
            (ValuePlan::Sint32, Raw::Varint(value)) => {
                let value = value as u32;
                number(out, ((value >> 1) as i32) ^ -((value & 1) as i32));
            }
            (ValuePlan::Int64, Raw::Varint(value)) | (ValuePlan::Sfixed64, Raw::Fixed64(value)) => {
                quoted(out, value as i64);
            }
            (ValuePlan::Uint64, Raw::Varint(value)) | (ValuePlan::Fixed64, Raw::Fixed64(value)) => {
                quoted(out, value);
            }
            (ValuePlan::Sint64, Raw::Varint(value)) => {
                quoted(out, ((value >> 1) as i64) ^ -((value & 1) as i64));
            }
            (ValuePlan::Fixed32, Raw::Fixed32(value)) => number(out, value),
            (ValuePlan::Sfixed32, Raw::Fixed32(value)) => number(out, value as i32),
            (ValuePlan::Float, Raw::Fixed32(bits)) => {
                let value = f32::from_bits(bits);
                if value.is_finite() {
                    serde_json::to_writer(&mut *out, &value).ok()?;
                } else {
                    write_non_finite(out, value.is_nan(), value > 0.0);
                }
            }
            (ValuePlan::Double, Raw::Fixed64(bits)) => {
                let value = f64::from_bits(bits);
                if value.is_finite() {
                    serde_json::to_writer(&mut *out, &value).ok()?;
                } else {
                    write_non_finite(out, value.is_nan(), value > 0.0);
                }
            }
            (ValuePlan::Enum(index), Raw::Varint(value)) => {
                let enumeration = &self.enums[index];
                if enumeration.null_value {
                    return None;
                }
                let value = value as i32;
                match enumeration
                    .names
                    .binary_search_by_key(&value, |(number, _)| *number)
                {
                    Ok(at) => out.extend_from_slice(&enumeration.names[at].1),
                    Err(_) => number(out, value),
                }
            }
            (ValuePlan::String, Raw::Delimited(bytes)) => {
                write_str(out, std::str::from_utf8(bytes).ok()?)?;
            }
            (ValuePlan::Bytes, Raw::Delimited(bytes)) => {
                out.push(b'"');
                let start = out.len();
                out.resize(start + base64::encoded_len(bytes.len(), true)?, 0);
                let written = BASE64_STANDARD
                    .encode_slice(bytes, &mut out[start..])
                    .ok()?;
                out.truncate(start + written);
                out.push(b'"');
            }
            (ValuePlan::Message(plan), Raw::Delimited(bytes)) => {
                self.write_message(out, plan, bytes, depth, scratch)?;
            }
            _ => return None,
        }
        Some(())
    }
}

fn enum_plan(enumeration: &EnumDescriptor) -> Option<EnumPlan> {
    let mut names = Vec::new();
    for value in enumeration.values() {
        // With aliases, the first name of a number is the one written.
        if names.iter().any(|(number, _)| *number == value.number()) {
            continue;
        }
        let mut name = Vec::new();
        serde_json::to_writer(&mut name, value.name()).ok()?;
        names.push((value.number(), name.into_boxed_slice()));
    }
    names.sort_by_key(|(number, _)| *number);
    let default_number = enumeration.default_value().number();
    let default = match names.binary_search_by_key(&default_number, |(number, _)| *number) {
        Ok(at) => names[at].1.clone(),
        Err(_) => default_number.to_string().into_bytes().into_boxed_slice(),
    };
    Some(EnumPlan {
        names,
        default,
        null_value: enumeration.full_name() == "google.protobuf.NullValue",
    })
}

fn write_non_finite(out: &mut Vec<u8>, nan: bool, positive: bool) {
    out.extend_from_slice(match (nan, positive) {
        (true, _) => b"\"NaN\"",
        (false, true) => b"\"Infinity\"",
        (false, false) => b"\"-Infinity\"",
    });
}

fn write_timestamp(out: &mut Vec<u8>, wire: &[u8]) -> Option<()> {
    let timestamp = prost_types::Timestamp::decode(wire).ok()?;
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&timestamp.seconds) {
        return None;
    }
    write_display(out, &timestamp)
}

fn write_duration(out: &mut Vec<u8>, wire: &[u8]) -> Option<()> {
    let duration = prost_types::Duration::decode(wire).ok()?;
    if duration.seconds.unsigned_abs() > MAX_DURATION_SECONDS
        || duration.nanos.unsigned_abs() > MAX_DURATION_NANOS
    {
        return None;
    }
    write_display(out, &duration)
}

/// A value's `Display` as a JSON string (escaped as serde_json escapes).
fn write_display(out: &mut Vec<u8>, value: &dyn std::fmt::Display) -> Option<()> {
    write_str(out, &value.to_string())
}

fn write_str(out: &mut Vec<u8>, text: &str) -> Option<()> {
    serde_json::to_writer(&mut *out, text).ok()
}

fn number<T: itoa::Integer>(out: &mut Vec<u8>, value: T) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

fn quoted<T: itoa::Integer>(out: &mut Vec<u8>, value: T) {
    out.push(b'"');
    number(out, value);
    out.push(b'"');
}

fn varint(wire: &mut &[u8]) -> Option<u64> {
    prost::encoding::decode_varint(wire).ok()
}

fn take<'a>(wire: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if wire.len() < len {
        return None;
    }
    let (head, tail) = wire.split_at(len);
    *wire = tail;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcode::response_json;
    use prost_reflect::{DynamicMessage, MapKey, Value};

    /// splitmix64: a fixed sequence, so a failure replays.
    struct Draws(u64);

    impl Draws {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// Mostly small numbers, sometimes the extremes.
        #[allow(clippy::cast_possible_wrap, reason = "any bit pattern will do")]
        fn int(&mut self) -> i64 {
            match self.below(6) {
                0 => 0,
                1 => -(self.below(1000) as i64),
                2 => self.next() as i64,
                3 => i64::MIN,
                _ => self.below(100_000) as i64,
            }
        }
    }

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "any bit pattern will do"
    )]
    fn scalar(kind: &Kind, draws: &mut Draws, depth: u32) -> Value {
        match kind {
            Kind::Bool => Value::Bool(draws.below(2) == 1),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(draws.int() as i32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(draws.int()),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(draws.int() as u32),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(draws.int() as u64),
            Kind::Float => Value::F32(
                [
                    0.0,
                    -0.0,
                    1.5,
                    f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    3.4e38,
                    1e-7,
                ][draws.below(8) as usize],
            ),
            Kind::Double => Value::F64(
                [
                    0.0,
                    -0.0,
                    0.1,
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    1e300,
                    -2.5e-8,
                ][draws.below(8) as usize],
            ),
            Kind::String => Value::String(
                ["", "Ana", "a\"b\\c\n\t\u{1}", "ção ☃ 𝄞", "</script>"][draws.below(5) as usize]
                    .to_owned(),
            ),
            Kind::Bytes => Value::Bytes(
                (0..draws.below(7))
                    .map(|_| draws.next() as u8)
                    .collect::<Vec<u8>>()
                    .into(),
            ),
            Kind::Enum(enumeration) => {
                let values: Vec<i32> = enumeration.values().map(|value| value.number()).collect();
                // An unknown number now and then: written as a number.
                if draws.below(8) == 0 || values.is_empty() {
                    Value::EnumNumber(draws.int() as i32)
                } else {
                    Value::EnumNumber(values[draws.below(values.len() as u64) as usize])
                }
            }
            Kind::Message(message) => Value::Message(random_message(message, draws, depth + 1)),
        }
    }

    #[allow(clippy::cast_possible_truncation, reason = "small lengths")]
    fn random_message(
        descriptor: &MessageDescriptor,
        draws: &mut Draws,
        depth: u32,
    ) -> DynamicMessage {
        let mut message = DynamicMessage::new(descriptor.clone());
        match descriptor.full_name() {
            "google.protobuf.Timestamp" => {
                let seconds = draws.int().rem_euclid(4_000_000_000) - 100_000;
                message.set_field_by_name("seconds", Value::I64(seconds));
                message.set_field_by_name("nanos", Value::I32((draws.below(1_000_000_000)) as i32));
                return message;
            }
            "google.protobuf.Duration" => {
                let seconds = draws.int() % 1_000_000;
                let nanos = (draws.below(1_000_000_000) as i32) * if seconds < 0 { -1 } else { 1 };
                message.set_field_by_name("seconds", Value::I64(seconds));
                message.set_field_by_name("nanos", Value::I32(nanos));
                return message;
            }
            _ => {}
        }
        for field in descriptor.fields() {
            if draws.below(3) == 0 {
                continue;
            }
            let kind = field.kind();
            if matches!(kind, Kind::Message(_)) && depth > 3 {
                continue;
            }
            let value = if field.is_map() {
                let Kind::Message(entry) = &kind else {
                    continue;
                };
                let key_kind = entry.map_entry_key_field().kind();
                let value_kind = entry.map_entry_value_field().kind();
                let mut map = std::collections::HashMap::new();
                for _ in 0..draws.below(3) {
                    let key = match scalar(&key_kind, draws, depth) {
                        Value::String(text) => MapKey::String(text),
                        Value::I32(n) => MapKey::I32(n),
                        Value::I64(n) => MapKey::I64(n),
                        Value::U32(n) => MapKey::U32(n),
                        Value::U64(n) => MapKey::U64(n),
                        Value::Bool(b) => MapKey::Bool(b),
                        _ => continue,
                    };
                    map.insert(key, scalar(&value_kind, draws, depth));
                }
                Value::Map(map)
            } else if field.is_list() {
                Value::List(
                    (0..draws.below(4))
                        .map(|_| scalar(&kind, draws, depth))
                        .collect(),
                )
            } else {
                scalar(&kind, draws, depth)
            };
            message.set_field(&field, value);
        }
        message
    }

    fn general(descriptor: &MessageDescriptor, wire: &[u8], body: &str) -> Option<Vec<u8>> {
        let message = DynamicMessage::decode(descriptor.clone(), wire).ok()?;
        response_json(&message, body).ok()
    }

    /// Every message of the contracts, and the test contracts' one with a
    /// field of each kind.
    fn messages() -> Vec<MessageDescriptor> {
        let contracts = safra::contract::descriptor::pool().expect("contracts");
        let tests = safra::testing::pool().expect("test contracts");
        contracts
            .all_messages()
            .filter(|message| message.full_name().starts_with("safra."))
            .chain(tests.get_message_by_name("safra.transcode.v1.EveryKind"))
            .collect()
    }

    /// Every contract message, filled at random 40 times (the one with every
    /// kind of field 1,000 times): wherever the walker
    /// answers, it answers what the general path writes, whole or one field.
    #[test]
    fn the_walker_writes_what_the_general_path_writes_for_every_contract_message() {
        let mut draws = Draws(19);
        // Walked and drawn: of the contracts' messages, of EveryKind.
        let mut counts = [[0_u32; 2]; 2];
        let contracts = AnswerWriter::new(&safra::contract::descriptor::pool().expect("contracts"));
        let tests = AnswerWriter::new(&safra::testing::pool().expect("test contracts"));
        for descriptor in messages() {
            let writer = if descriptor.name() == "EveryKind" {
                &tests
            } else {
                &contracts
            };
            let every_kind = usize::from(descriptor.name() == "EveryKind");
            let rounds = if every_kind == 1 { 1000 } else { 40 };
            for _ in 0..rounds {
                let mut message = random_message(&descriptor, &mut draws, 0);
                if every_kind == 1 && draws.below(2) == 0 {
                    // Half of them without what the walker declines.
                    message.clear_field_by_name("counts");
                    message.clear_field_by_name("wrapped");
                }
                let wire = message.encode_to_vec();
                counts[every_kind][1] += 1;
                if let Some(json) = writer.to_json(&descriptor, &wire, "") {
                    counts[every_kind][0] += 1;
                    assert_eq!(
                        String::from_utf8(json).expect("utf8"),
                        String::from_utf8(general(&descriptor, &wire, "").expect("general"))
                            .expect("utf8"),
                        "{}",
                        descriptor.full_name()
                    );
                }
                for field in descriptor.fields() {
                    if let Some(json) = writer.to_json(&descriptor, &wire, field.name()) {
                        assert_eq!(
                            String::from_utf8(json).expect("utf8"),
                            String::from_utf8(
                                general(&descriptor, &wire, field.name()).expect("general")
                            )
                            .expect("utf8"),
                            "{}.{}",
                            descriptor.full_name(),
                            field.name()
                        );
                    }
                }
            }
        }
        // Declining everything would pass the comparison: the contracts'
        // messages must nearly all be walked, and EveryKind when neither its
        // map nor its wrapper is drawn.
        let [[contracts, drawn], [every_kind, every_drawn]] = counts;
        // (Those with a google.protobuf.Any are declined.)
        assert!(
            contracts * 100 >= drawn * 95,
            "walked {contracts} of {drawn}"
        );
        assert!(
            every_kind * 5 >= every_drawn,
            "walked {every_kind} of {every_drawn}"
        );
    }

    fn offering() -> MessageDescriptor {
        safra::contract::descriptor::pool()
            .expect("contracts")
            .get_message_by_name("safra.marketplace.v1.Offering")
            .expect("Offering")
    }

    /// A field's key on the wire (a varint).
    fn key(field: u32, wire_type: u64) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint((u64::from(field) << 3) | wire_type, &mut out);
        out
    }

    #[test]
    fn wire_forms_the_general_path_accepts_are_written_alike_or_declined() {
        let descriptor = offering();
        let writer = AnswerWriter::new(descriptor.parent_pool());
        let string_field = descriptor
            .fields()
            .find(|field| field.kind() == Kind::String && !field.is_list())
            .expect("a string field");
        let number = string_field.number();
        // A field sent twice: the last one wins on both paths.
        let mut twice = [key(number, 2), vec![1, b'a'], key(number, 2), vec![1, b'b']].concat();
        // An unknown field, skipped by both.
        twice.extend_from_slice(&[0xb8, 0x3e, 5]); // field 999, varint 5
        let walked = writer.to_json(&descriptor, &twice, "").expect("walked");
        assert_eq!(walked, general(&descriptor, &twice, "").expect("general"));
        assert!(String::from_utf8(walked).expect("utf8").contains("\"b\""));

        let message_field = descriptor
            .fields()
            .find(|field| matches!(field.kind(), Kind::Message(_)) && !field.is_list())
            .expect("a message field");
        // A message field sent twice is merged by protobuf: declined.
        let merged = [
            key(message_field.number(), 2),
            vec![0],
            key(message_field.number(), 2),
            vec![0],
        ]
        .concat();
        assert_eq!(writer.to_json(&descriptor, &merged, ""), None);
        assert!(general(&descriptor, &merged, "").is_some());

        // Truncated bytes and a wrong wire type are declined, and the general
        // path refuses them.
        for broken in [
            [key(number, 2), vec![5, b'a']].concat(),
            [key(number, 5), vec![1, 2, 3, 4]].concat(),
        ] {
            let broken = broken.as_slice();
            assert_eq!(writer.to_json(&descriptor, broken, ""), None);
            assert!(crate::transcode::answer_json(&writer, &descriptor, broken, "").is_err());
        }
        // A repeated number sent unpacked, one element per occurrence.
        let holder = messages().pop().expect("EveryKind");
        let holder_writer = AnswerWriter::new(holder.parent_pool());
        let list = holder.get_field_by_name("sizes").expect("sizes");
        let unpacked = [
            key(list.number(), 0),
            vec![1],
            key(list.number(), 0),
            vec![2],
        ]
        .concat();
        let walked = holder_writer
            .to_json(&holder, &unpacked, "")
            .expect("walked");
        assert_eq!(walked, general(&holder, &unpacked, "").expect("general"));
        assert!(
            String::from_utf8(walked)
                .expect("utf8")
                .contains(r#""sizes":["SIZE_SMALL","SIZE_LARGE"]"#)
        );

        // Text that is not UTF-8.
        let latin1 = [key(number, 2), vec![1, 0xe7]].concat();
        assert_eq!(writer.to_json(&descriptor, &latin1, ""), None);
        assert!(crate::transcode::answer_json(&writer, &descriptor, &latin1, "").is_err());
    }
}
