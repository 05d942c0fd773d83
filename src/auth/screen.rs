//! What the auth layer refuses in a request's text before any handler parses
//! (and might store or echo) it: a NUL character in any string field, which
//! PostgreSQL's text cannot store, and a card number in the fields the proto
//! marks `(orgd.v1.free_text)`, where a person may type or paste one. Ids,
//! emails and tokens are not screened, so an account id that happens to pass
//! the card rules is not refused; an error that echoes one masks it instead.

use std::collections::HashSet;

use anyhow::Context;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Value};

use crate::domain::{card_number_refusal, contains_card_number};
use crate::error::Error;

/// The request fields screened for card numbers, read from the proto.
#[derive(Debug, Clone)]
pub struct TextScreen {
    /// Full names of the fields marked free text, `orgd.v1.Organization.description`.
    free_text: HashSet<String>,
}

impl TextScreen {
    pub fn from_pool(pool: &DescriptorPool) -> anyhow::Result<Self> {
        let option = pool
            .get_extension_by_name("orgd.v1.free_text")
            .context("the descriptor set lacks the orgd.v1.free_text extension")?;
        let free_text = pool
            .all_messages()
            .flat_map(|message| message.fields().collect::<Vec<_>>())
            .filter(|field| field.options().get_extension(&option).as_bool() == Some(true))
            .map(|field| field.full_name().to_owned())
            .collect();
        Ok(TextScreen { free_text })
    }

    /// The refusal of the first string field of `message` (nested messages and
    /// lists included) that orgd takes from nobody, naming the field only.
    pub fn refusal(&self, message: &DynamicMessage) -> Option<Error> {
        self.refusal_in(message, "")
    }

    fn refusal_in(&self, message: &DynamicMessage, prefix: &str) -> Option<Error> {
        message.fields().find_map(|(field, value)| {
            let path = if prefix.is_empty() {
                field.name().to_owned()
            } else {
                format!("{prefix}.{}", field.name())
            };
            match value {
                Value::List(items) => items.iter().enumerate().find_map(|(i, item)| {
                    self.refusal_of_value(&field, item, format!("{path}[{i}]"))
                }),
                other => self.refusal_of_value(&field, other, path),
            }
        })
    }

    fn refusal_of_value(
        &self,
        field: &FieldDescriptor,
        value: &Value,
        path: String,
    ) -> Option<Error> {
        match value {
            Value::String(text) if text.contains('\0') => Some(Error::invalid(
                path,
                "must not contain control characters such as NUL (U+0000)",
            )),
            Value::String(text) if self.is_free_text(field) && contains_card_number(text) => {
                Some(card_number_refusal(&path))
            }
            Value::Message(inner) => self.refusal_in(inner, &path),
            _ => None,
        }
    }

    fn is_free_text(&self, field: &FieldDescriptor) -> bool {
        self.free_text.contains(field.full_name())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_reflect::{Kind, MessageDescriptor};

    use super::*;
    use crate::auth::PolicyTable;
    use crate::pb;

    /// Request string fields that hold no free text, by name: ids, resource
    /// names, emails, codes, tokens. Every other string field of every request
    /// must be marked `(orgd.v1.free_text)`, so that a new field fails the test
    /// below until someone decides whether a person types free text there.
    const NOT_FREE_TEXT: &[&str] = &[
        // Resource names and ids, the caller's own included.
        "name",
        "names",
        "parent",
        "organization",
        "organizations",
        "destination",
        "new_owner",
        "user",
        "uid",
        "personal_organization",
        // An identity provider's subject.
        "subject",
        "inviter",
        "member",
        "creator",
        "actor",
        // A usage charge's resource, and the invoice that billed it.
        "resource",
        "invoice",
        "plan",
        "request_id",
        "correlation_id",
        // A payment processor's id of a charge, sent by a backend service.
        "processor_reference",
        "external_id",
        // Handles, codes and kinds, each of its own shape.
        "slug",
        "kind",
        "code",
        "currency_code",
        "country",
        "tax_id",
        "last4",
        "prefix",
        // Email addresses.
        "email",
        "contact_email",
        "pending_contact_email",
        "billing_email",
        "pending_billing_email",
        // Roles, permissions and actions of orgd's catalogue.
        "roles",
        "extra_permissions",
        "effective_permissions",
        "permission",
        "action",
        "type_prefixes",
        // Tokens orgd issued, etags, page tokens, field masks, feed cursors.
        "token",
        "etag",
        "page_token",
        "paths",
        "after",
        // Webhooks: endpoint URLs, event ids and types, and the output-only
        // reason an endpoint was disabled.
        "url",
        "event_type_prefixes",
        "webhook_endpoint",
        "event_id",
        "cursor",
        "disabled_reason",
    ];

    /// Every string field of every message a request can hold.
    fn request_string_fields() -> Vec<FieldDescriptor> {
        let mut pending: Vec<MessageDescriptor> = PolicyTable::orgd()
            .methods()
            .map(|(_, entry)| entry.input.clone())
            .collect();
        let mut seen = HashSet::new();
        let mut fields = Vec::new();
        while let Some(message) = pending.pop() {
            if !seen.insert(message.full_name().to_owned()) {
                continue;
            }
            for field in message.fields() {
                match field.kind() {
                    Kind::String => fields.push(field),
                    Kind::Message(inner) => pending.push(inner),
                    _ => {}
                }
            }
        }
        fields
    }

    #[test]
    fn every_request_string_field_is_classified() {
        let screen = PolicyTable::orgd().screen();
        let fields = request_string_fields();
        for field in &fields {
            let (free, listed) = (
                screen.is_free_text(field),
                NOT_FREE_TEXT.contains(&field.name()),
            );
            assert!(
                !(free && listed),
                "{} is marked free text, but fields named '{}' are listed as never free text",
                field.full_name(),
                field.name()
            );
            assert!(
                free || listed,
                "{} is neither marked [(orgd.v1.free_text) = true] nor named in NOT_FREE_TEXT: decide whether a person types free text there",
                field.full_name()
            );
        }
        for name in NOT_FREE_TEXT {
            assert!(
                fields.iter().any(|field| field.name() == *name),
                "no request has a field named '{name}': drop it from NOT_FREE_TEXT"
            );
        }
        for name in [
            "orgd.v1.Organization.description",
            "orgd.v1.PostalAddress.address_lines",
            "orgd.v1.PaymentMethod.processor_token",
        ] {
            assert!(screen.free_text.contains(name), "{name}");
        }
    }

    /// `request` as the auth layer decodes it for `method`.
    fn decoded(method: &str, request: impl Message) -> DynamicMessage {
        let entry = PolicyTable::orgd().get(method).unwrap();
        DynamicMessage::decode(entry.input.clone(), request.encode_to_vec().as_slice()).unwrap()
    }

    fn refused_field(message: &DynamicMessage) -> Option<String> {
        match PolicyTable::orgd().screen().refusal(message)? {
            Error::InvalidArgument { field, .. } => Some(field),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn card_numbers_are_refused_in_free_text_only() {
        let register = |display_name: &str, external_id: &str| {
            decoded(
                "/orgd.v1.ResourceService/RegisterResource",
                pb::RegisterResourceRequest {
                    parent: "organizations/acme".into(),
                    resource: Some(pb::Resource {
                        kind: "app".into(),
                        external_id: external_id.into(),
                        display_name: display_name.into(),
                        ..Default::default()
                    }),
                },
            )
        };
        assert_eq!(
            refused_field(&register("Pay with 4111 1111 1111 1111", "app-1")),
            Some("resource.display_name".into())
        );
        assert_eq!(refused_field(&register("Web", "4111111111111111")), None);
        assert_eq!(
            refused_field(&register("Web", "app\0")),
            Some("resource.external_id".into())
        );
        let address = decoded(
            "/orgd.v1.BillingService/UpdateBillingProfile",
            pb::UpdateBillingProfileRequest {
                billing_profile: Some(pb::BillingProfile {
                    address: Some(pb::PostalAddress {
                        address_lines: vec!["Main St 1".into(), "378282246310005".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: None,
            },
        );
        assert_eq!(
            refused_field(&address),
            Some("billing_profile.address.address_lines[1]".into())
        );
    }
}
