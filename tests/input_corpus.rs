//! A corpus of hostile values run through every string and timestamp field of
//! every RPC's request (enumerated from the descriptor, nested messages
//! included), each call by a caller the policy admits: none may end INTERNAL
//! (or UNKNOWN, or UNAVAILABLE), and every refusal stays small and repeats at
//! most a short part of the value (a reply's headers must fit a client's 16 KB).

mod common;

use common::{TestApp, create_org, raw, service_token, user_token};
use orgd::auth::{Policy, PolicyTable};
use orgd::pb;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value,
};
use tonic::Code;

/// A value a client should never be able to turn into a server fault.
fn hostile_strings() -> Vec<String> {
    vec![
        "A".repeat(5_000),
        "x\0y".into(),
        "3782   822463   10005".into(),
        "4111 / 1111 / 1111 / 1111".into(),
        "\u{200B}\u{200B}\u{200B}".into(),
        "\u{202E}evil\u{0007}\r\nX-Injected: 1".into(),
        "\u{212A}ate@example.com".into(),
        "../../../etc/passwd%00%2F".into(),
        "'; DROP TABLE organizations; --".into(),
        "9".repeat(100),
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🦀".into(),
        "organizations/../organizations/%2e%2e".into(),
        forged_page_token(),
    ]
}

/// A page token in orgd's own form whose position is a time PostgreSQL cannot
/// hold (some 190,000 years BCE), as a forger would write it: in every List
/// RPC's `page_token` it must be INVALID_ARGUMENT, like any bad token.
fn forged_page_token() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("-6000000000000000000:{}", uuid::Uuid::nil()))
}

/// (seconds, nanos) PostgreSQL or chrono cannot hold, or a Timestamp may not be.
const HOSTILE_TIMES: [(i64, i32); 6] = [
    (i64::MIN, 0),
    (i64::MAX, 0),
    (-62_135_596_801, 0), // the year 0
    (253_402_300_800, 0), // the year 10000
    (0, -1),
    (0, 2_000_000_000),
];

/// A leaf the corpus fills: a path of field names from the request.
#[derive(Debug, Clone)]
enum Leaf {
    Text(Vec<String>),
    Time(Vec<String>),
}

/// Every string and Timestamp field under `message`, nested messages included
/// (to a depth that covers orgd's requests, and without following cycles).
fn leaves(message: &MessageDescriptor, prefix: &[String], found: &mut Vec<Leaf>) {
    for field in message.fields() {
        let path: Vec<String> = prefix
            .iter()
            .cloned()
            .chain([field.name().to_owned()])
            .collect();
        match field.kind() {
            Kind::String => found.push(Leaf::Text(path)),
            Kind::Message(inner) if inner.full_name() == "google.protobuf.Timestamp" => {
                found.push(Leaf::Time(path))
            }
            Kind::Message(inner) if prefix.len() < 3 && inner != *message => {
                leaves(&inner, &path, found)
            }
            _ => {}
        }
    }
}

/// Sets the field at `path` of `message`, creating the messages on the way.
fn set(message: &mut DynamicMessage, path: &[String], value: Value) {
    let field = message.descriptor().get_field_by_name(&path[0]).unwrap();
    if path.len() == 1 {
        let value = if field.is_list() {
            Value::List(vec![value])
        } else {
            value
        };
        message.set_field(&field, value);
        return;
    }
    let mut inner = match message.get_field(&field).into_owned() {
        Value::Message(inner) => inner,
        _ => DynamicMessage::new(field.kind().as_message().unwrap().clone()),
    };
    if field.is_list() {
        set(&mut inner, &path[1..], value);
        message.set_field(&field, Value::List(vec![Value::Message(inner)]));
    } else {
        set(&mut inner, &path[1..], value);
        message.set_field(&field, Value::Message(inner));
    }
}

/// The request for one corpus call: the organization (or a resource in it)
/// where the policy looks for it, the hostile `value` at `leaf`, and, for an
/// update, a mask naming that field so the handler reads it.
fn corpus_request(
    input: &MessageDescriptor,
    org_field: &[String],
    target: &str,
    leaf: &[String],
    value: Value,
) -> Vec<u8> {
    let mut message = DynamicMessage::new(input.clone());
    if !org_field.is_empty() {
        set(&mut message, org_field, Value::String(target.to_owned()));
    }
    if leaf.len() > 1 && input.get_field_by_name("update_mask").is_some() {
        let path = Value::String(leaf[1..].join("."));
        set(&mut message, &["update_mask".into(), "paths".into()], path);
    }
    set(&mut message, leaf, value);
    message.encode_to_vec()
}

fn timestamp(pool: &DescriptorPool, seconds: i64, nanos: i32) -> Value {
    let descriptor = pool
        .get_message_by_name("google.protobuf.Timestamp")
        .unwrap();
    let mut time = DynamicMessage::new(descriptor);
    time.set_field_by_name("seconds", Value::I64(seconds));
    time.set_field_by_name("nanos", Value::I32(nanos));
    Value::Message(time)
}

/// What is wrong with a refusal, if anything.
fn fault(status: &tonic::Status) -> Option<String> {
    let message = status.message();
    let digits: String = message.chars().filter(char::is_ascii_digit).collect();
    if matches!(
        status.code(),
        Code::Internal | Code::Unknown | Code::Unavailable
    ) {
        Some(format!("{status:?}"))
    } else if message.len() > 1024 || status.details().len() > 4096 {
        Some(format!(
            "a {}-byte message with {} bytes of details",
            message.len(),
            status.details().len()
        ))
    } else if message.contains(&"A".repeat(101)) {
        Some("echoes the long value".into())
    } else if ["378282246310005", "4111111111111111"]
        .iter()
        .any(|card| digits.contains(card))
    {
        Some(format!("echoes a card number: {message}"))
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_values_in_every_field_never_fault_and_replies_stay_small() {
    let app = TestApp::spawn().await;
    let channel = app.channel().await;
    let table = PolicyTable::from_descriptor_set(pb::FILE_DESCRIPTOR_SET, pb::PACKAGE).unwrap();
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
    let strings = hostile_strings();
    let service = service_token();

    let (mut methods, mut calls, mut faults) = (0, 0, Vec::new());
    // List calls that refused a forged page token, naming it.
    let mut pages = 0;
    // Calls a handler or the request screen judged: OK or INVALID_ARGUMENT.
    let mut answered = 0;
    for method in pool
        .services()
        .filter(|s| s.package_name() == pb::PACKAGE)
        .flat_map(|s| s.methods().collect::<Vec<_>>())
    {
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        let policy = table
            .get(&path)
            .and_then(|entry| entry.policy.clone())
            .unwrap();
        // Each method has an organization of its own, so that one method's
        // corpus (a deletion, say) leaves the next one's starting point alone.
        let owner = format!("corpus-owner-{methods}");
        let org = create_org(&mut app.orgs_as(&owner).await, "Corpus").await;
        let (token, org_field, target) = match &policy {
            Policy::Org(scope) => {
                let target = if scope.child_resource {
                    format!("{}/things/{}", org.name, uuid::Uuid::now_v7())
                } else {
                    org.name.clone()
                };
                (user_token(&owner), scope.org_field.clone(), target)
            }
            Policy::Account { user_field } => {
                let user = format!("users/{}", app.user_id(&owner).await);
                (user_token(&owner), user_field.clone(), user)
            }
            Policy::Authenticated { .. } => (user_token(&owner), Vec::new(), String::new()),
            Policy::Service { .. } => (service.clone(), Vec::new(), String::new()),
        };
        let mut found = Vec::new();
        leaves(&method.input(), &[], &mut found);
        for leaf in found {
            let (field, values): (_, Vec<Value>) = match &leaf {
                Leaf::Text(field) => (field, strings.iter().cloned().map(Value::String).collect()),
                Leaf::Time(field) => (
                    field,
                    HOSTILE_TIMES
                        .iter()
                        .map(|(s, n)| timestamp(&pool, *s, *n))
                        .collect(),
                ),
            };
            for value in values {
                let shown = format!("{path} {} = {value:.60?}", field.join("."));
                let forged_page = field.join(".") == "page_token"
                    && value.as_str() == Some(forged_page_token().as_str());
                let body = corpus_request(&method.input(), &org_field, &target, field, value);
                let result = raw::call(&channel, &path, body, Some(&token)).await;
                calls += 1;
                if forged_page {
                    // A method that needs more than the corpus fills in refuses
                    // the call for that first; the rest must name the token.
                    match &result {
                        Err(status) if status.code() == Code::InvalidArgument => {
                            pages += usize::from(status.message().starts_with("page_token"));
                        }
                        other => {
                            faults.push(format!("{shown}: a forged page token gave {other:?}"))
                        }
                    }
                }
                let Err(status) = result else {
                    answered += 1;
                    continue;
                };
                if status.code() == Code::InvalidArgument {
                    answered += 1;
                }
                faults.extend(fault(&status).map(|fault| format!("{shown}: {fault}")));
            }
        }
        methods += 1;
    }
    assert!(
        faults.is_empty(),
        "{} of {calls} calls went wrong:\n{}",
        faults.len(),
        faults.join("\n")
    );
    assert!(methods >= 54, "only {methods} methods");
    assert!(
        pages >= 10,
        "only {pages} List RPCs refused the forged page_token"
    );
    assert!(calls > 1_500, "only {calls} calls");
    // Most values reach the code that judges them, not a refusal of the caller.
    assert!(
        answered * 10 > calls * 8,
        "only {answered} of {calls} calls were judged"
    );
    // Still serving, and nothing the corpus sent left the database unusable.
    let mut orgs = app.orgs_as("after-the-corpus").await;
    create_org(&mut orgs, "Still here").await;
}
