//! A client that knows nothing of orgd but its address decodes orgd's error
//! details: server reflection (v1 and v1alpha) serves `google/rpc/status.proto`
//! and `google/rpc/error_details.proto` with their imports, and the
//! `grpc-status-details-bin` of a refused call decodes against what it served.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{TestApp, create_org, expect_code};
use orgd::pb;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use tonic::Code;
use tonic::transport::Channel;

/// What a reflection client asks for: a symbol, or a file (an import) by name.
enum Ask {
    Symbol(&'static str),
    File(String),
}

/// The serialized `FileDescriptorProto`s that one reflection endpoint (`v1` or
/// `v1alpha`) answers `ask` with.
macro_rules! reflect {
    ($version:ident, $channel:expr, $ask:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let message_request = match $ask {
            Ask::Symbol(symbol) => MessageRequest::FileContainingSymbol(symbol.to_owned()),
            Ask::File(name) => MessageRequest::FileByFilename(name.clone()),
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message_request),
        };
        let mut stream = ServerReflectionClient::new($channel.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        match stream.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::FileDescriptorResponse(files)) => files.file_descriptor_proto,
            other => panic!("expected file descriptors, got {other:?}"),
        }
    }};
}

/// The error model's types, each with the file reflection must name for it
/// (googleapis' own path, so that protos importing it resolve too).
const ERROR_TYPES: [(&str, &str); 4] = [
    ("google.rpc.Status", "google/rpc/status.proto"),
    ("google.rpc.ErrorInfo", "google/rpc/error_details.proto"),
    ("google.rpc.BadRequest", "google/rpc/error_details.proto"),
    (
        "google.rpc.PreconditionFailure",
        "google/rpc/error_details.proto",
    ),
];

/// Everything a reflection client learns about the error model from one
/// endpoint: the files holding `ERROR_TYPES`, then their imports, file by file.
macro_rules! error_model_files {
    ($version:ident, $channel:expr) => {{
        let mut files = BTreeMap::<String, FileDescriptorProto>::new();
        for (symbol, file_name) in ERROR_TYPES {
            let answer = reflect!($version, $channel, Ask::Symbol(symbol));
            let first = FileDescriptorProto::decode(answer[0].as_slice()).unwrap();
            assert_eq!(
                first.name(),
                file_name,
                "the file reflection names for {symbol}"
            );
            for raw in answer {
                let file = FileDescriptorProto::decode(raw.as_slice()).unwrap();
                files.insert(file.name().to_owned(), file);
            }
        }
        let mut asked = BTreeSet::new();
        loop {
            let missing: Vec<String> = files
                .values()
                .flat_map(|file| file.dependency.clone())
                .filter(|name| !files.contains_key(name) && asked.insert(name.clone()))
                .collect();
            if missing.is_empty() {
                break;
            }
            for name in missing {
                for raw in reflect!($version, $channel, Ask::File(name)) {
                    let file = FileDescriptorProto::decode(raw.as_slice()).unwrap();
                    files.insert(file.name().to_owned(), file);
                }
            }
        }
        DescriptorPool::from_file_descriptor_set(FileDescriptorSet {
            file: files.into_values().collect(),
        })
        .expect("reflection served every file the error model imports")
    }};
}

/// The details of `status` as `(type name, message)`, decoded with `pool` alone.
fn decode_details(pool: &DescriptorPool, status: &tonic::Status) -> Vec<(String, DynamicMessage)> {
    assert!(
        !status.details().is_empty(),
        "{status:?} has no grpc-status-details-bin"
    );
    let rich = DynamicMessage::decode(
        pool.get_message_by_name("google.rpc.Status").unwrap(),
        status.details(),
    )
    .unwrap();
    assert_eq!(
        rich.get_field_by_name("code").unwrap().as_i32(),
        Some(status.code() as i32)
    );
    let details = rich.get_field_by_name("details").unwrap();
    details
        .as_list()
        .unwrap()
        .iter()
        .map(|any| {
            let any = any.as_message().unwrap();
            let type_url = any.get_field_by_name("type_url").unwrap();
            let type_name = type_url
                .as_str()
                .unwrap()
                .strip_prefix("type.googleapis.com/")
                .expect("a type.googleapis.com type URL")
                .to_owned();
            let descriptor = pool
                .get_message_by_name(&type_name)
                .unwrap_or_else(|| panic!("reflection did not describe {type_name}"));
            let value = any.get_field_by_name("value").unwrap();
            let message =
                DynamicMessage::decode(descriptor, value.as_bytes().unwrap().clone()).unwrap();
            (type_name, message)
        })
        .collect()
}

/// The detail of type `type_name` among `details`.
fn detail<'a>(details: &'a [(String, DynamicMessage)], type_name: &str) -> &'a DynamicMessage {
    details
        .iter()
        .find(|(name, _)| name == type_name)
        .map(|(_, message)| message)
        .unwrap_or_else(|| {
            let names: Vec<_> = details.iter().map(|(name, _)| name).collect();
            panic!("no {type_name} among {names:?}")
        })
}

/// The string field `field` of `message`.
fn text(message: &DynamicMessage, field: &str) -> String {
    match message.get_field_by_name(field).as_deref() {
        Some(Value::String(value)) => value.clone(),
        other => panic!("{field} of {message:?} is {other:?}"),
    }
}

/// The first message of the repeated field `field` of `message`.
fn first(message: &DynamicMessage, field: &str) -> DynamicMessage {
    let list = message.get_field_by_name(field).unwrap();
    list.as_list()
        .and_then(|items| items.first())
        .and_then(Value::as_message)
        .unwrap_or_else(|| panic!("{field} of {message:?} is empty"))
        .clone()
}

async fn refused_calls(app: &TestApp) -> (tonic::Status, tonic::Status) {
    let mut orgs = app.orgs_as("alice").await;
    let bad_slug = expect_code(
        orgs.create_organization(pb::CreateOrganizationRequest {
            request_id: String::new(),
            organization: Some(pb::Organization {
                display_name: "Acme".into(),
                slug: "Bad Slug!".into(),
                ..Default::default()
            }),
        })
        .await,
        Code::InvalidArgument,
    );
    let org = create_org(&mut orgs, "Acme").await;
    let last_owner = expect_code(
        app.members_as("alice")
            .await
            .leave_organization(pb::LeaveOrganizationRequest {
                organization: org.name.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
    (bad_slug, last_owner)
}

fn assert_decodes(pool: &DescriptorPool, bad_slug: &tonic::Status, last_owner: &tonic::Status) {
    let details = decode_details(pool, bad_slug);
    let info = detail(&details, "google.rpc.ErrorInfo");
    assert_eq!(text(info, "reason"), "INVALID_FIELD");
    assert_eq!(text(info, "domain"), "orgd");
    let metadata = info.get_field_by_name("metadata").unwrap();
    let field = metadata
        .as_map()
        .and_then(|map| map.get(&prost_reflect::MapKey::String("field".into())))
        .and_then(Value::as_str)
        .map(str::to_owned);
    assert_eq!(field.as_deref(), Some("organization.slug"));
    let violation = first(
        detail(&details, "google.rpc.BadRequest"),
        "field_violations",
    );
    assert_eq!(text(&violation, "field"), "organization.slug");
    assert!(text(&violation, "description").contains("not a valid slug"));

    let details = decode_details(pool, last_owner);
    assert_eq!(
        text(detail(&details, "google.rpc.ErrorInfo"), "reason"),
        "LAST_OWNER"
    );
    let violation = first(
        detail(&details, "google.rpc.PreconditionFailure"),
        "violations",
    );
    assert_eq!(text(&violation, "type"), "LAST_OWNER");
    assert!(!text(&violation, "description").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reflection_client_decodes_the_error_details() {
    let app = TestApp::spawn().await;
    let channel: Channel = app.channel().await;
    let (bad_slug, last_owner) = refused_calls(&app).await;

    // buf curl and grpcurl use v1; Python's reflection client uses v1alpha.
    let v1 = error_model_files!(v1, channel);
    let v1alpha = error_model_files!(v1alpha, channel);
    for pool in [&v1, &v1alpha] {
        for file in [
            "google/protobuf/any.proto",
            "google/protobuf/duration.proto",
        ] {
            assert!(pool.get_file_by_name(file).is_some(), "{file} not served");
        }
        assert_decodes(pool, &bad_slug, &last_owner);
    }
}
