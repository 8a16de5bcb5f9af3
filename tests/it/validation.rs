//! The contract-driven validator on real request messages: every violated
//! field is reported with its proto path, valid requests pass untouched.

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use safra::{
    accounts::v1::{RegisterRequest, Role},
    contract::validate::Validator,
    google::r#type::Date,
    marketplace::v1::{CreateOfferingRequest, Installment, ListOfferingsRequest, Offering},
    r#type::v1::Money,
};

fn descriptor(name: &str) -> MessageDescriptor {
    safra::contract::descriptor::pool()
        .expect("pool")
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} exists"))
}

/// Violations of `message` as `(path, reason)` pairs.
fn violations(name: &str, message: &impl Message) -> Vec<(String, &'static str)> {
    let pool = safra::contract::descriptor::pool().expect("pool");
    let validator = Validator::new(&pool).expect("patterns compile");
    let dynamic = DynamicMessage::decode(descriptor(name), message.encode_to_vec().as_slice())
        .expect("decodes");
    validator
        .validate(&dynamic)
        .into_iter()
        .map(|violation| (violation.field, violation.reason))
        .collect()
}

fn brl(amount_minor: i64) -> Money {
    Money {
        currency_code: "BRL".into(),
        amount_minor,
    }
}

fn date(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}

#[test]
fn a_valid_registration_passes() {
    let request = RegisterRequest {
        email: "ana@fazenda.com.br".into(),
        password: "correct horse battery".into(),
        display_name: "Ana".into(),
        role: Role::Producer as i32,
    };
    assert_eq!(
        violations("safra.accounts.v1.RegisterRequest", &request),
        []
    );
}

#[test]
fn every_broken_registration_field_is_reported() {
    let request = RegisterRequest {
        email: "not-an-email".into(),
        password: "short".into(),
        display_name: String::new(),
        role: 0,
    };
    assert_eq!(
        violations("safra.accounts.v1.RegisterRequest", &request),
        [
            ("email".to_owned(), "INVALID_FORMAT"),
            ("password".to_owned(), "TOO_SHORT"),
            ("display_name".to_owned(), "REQUIRED"),
            ("role".to_owned(), "REQUIRED"),
        ]
    );
}

#[test]
fn a_nul_character_is_refused_in_any_string_field() {
    // Found by schemathesis: PostgreSQL refuses U+0000 in text, which
    // surfaced as an internal error.
    let request = RegisterRequest {
        email: "ana@fazenda.com.br".into(),
        password: "correct horse\0battery".into(),
        display_name: "J\0".into(),
        role: Role::Investor as i32,
    };
    assert_eq!(
        violations("safra.accounts.v1.RegisterRequest", &request),
        [
            ("password".to_owned(), "INVALID_CHARACTER"),
            ("display_name".to_owned(), "INVALID_CHARACTER"),
        ]
    );
}

#[test]
fn an_undefined_enum_number_is_refused() {
    let request = RegisterRequest {
        email: "ana@fazenda.com.br".into(),
        password: "correct horse battery".into(),
        display_name: "Ana".into(),
        role: 42,
    };
    assert_eq!(
        violations("safra.accounts.v1.RegisterRequest", &request),
        [("role".to_owned(), "UNDEFINED_ENUM_VALUE")]
    );
}

fn offering() -> Offering {
    Offering {
        commodity: "soybean".into(),
        quantity: 1000,
        unit: "bag_60kg".into(),
        face_value: Some(brl(15_000_000)),
        annual_rate_bps: 1200,
        maturity_date: Some(date(2027, 6, 30)),
        funding_deadline: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        installments: vec![Installment {
            number: 1,
            due_date: Some(date(2027, 6, 30)),
            amount: Some(brl(15_000_000)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn a_valid_offering_passes() {
    let request = CreateOfferingRequest {
        offering: Some(offering()),
    };
    assert_eq!(
        violations("safra.marketplace.v1.CreateOfferingRequest", &request),
        []
    );
}

#[test]
fn nested_rules_report_paths_into_lists() {
    let mut broken = offering();
    broken.commodity = "Soy Bean!".into();
    broken.face_value = Some(Money {
        currency_code: "real".into(),
        amount_minor: 0,
    });
    broken.installments.push(Installment {
        number: 0,
        due_date: Some(date(2027, 2, 30)),
        amount: None,
        ..Default::default()
    });
    let request = CreateOfferingRequest {
        offering: Some(broken),
    };
    let found = violations("safra.marketplace.v1.CreateOfferingRequest", &request);
    for expected in [
        ("offering.commodity", "PATTERN_MISMATCH"),
        ("offering.face_value.amount_minor", "BELOW_MINIMUM"),
        ("offering.face_value.currency_code", "INVALID_FORMAT"),
        ("offering.installments[1].number", "BELOW_MINIMUM"),
        ("offering.installments[1].due_date", "INVALID_DATE"),
        ("offering.installments[1].amount", "REQUIRED"),
    ] {
        assert!(
            found
                .iter()
                .any(|(path, reason)| path == expected.0 && *reason == expected.1),
            "missing {expected:?} in {found:?}"
        );
    }
    assert_eq!(found.len(), 6, "{found:?}");
}

#[test]
fn a_missing_offering_is_one_violation() {
    let request = CreateOfferingRequest { offering: None };
    assert_eq!(
        violations("safra.marketplace.v1.CreateOfferingRequest", &request),
        [("offering".to_owned(), "REQUIRED")]
    );
}

#[test]
fn optional_filters_may_be_empty_but_not_malformed() {
    let empty = ListOfferingsRequest::default();
    assert_eq!(
        violations("safra.marketplace.v1.ListOfferingsRequest", &empty),
        []
    );
    let malformed = ListOfferingsRequest {
        page_size: 501,
        producer_id: "42".into(),
        ..Default::default()
    };
    assert_eq!(
        violations("safra.marketplace.v1.ListOfferingsRequest", &malformed),
        [
            ("page_size".to_owned(), "ABOVE_MAXIMUM"),
            ("producer_id".to_owned(), "INVALID_FORMAT"),
        ]
    );
}
