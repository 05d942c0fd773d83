//! Validated domain values and rules. A value of these types is valid by
//! construction, so code past the API edge never re-validates. No tonic, no diesel.

mod action;
mod billing;
mod card;
mod email;
mod grant;
mod money;
mod names;
mod org;
mod page;
mod payment;
mod quote;
mod secret;
mod text;
mod time;
mod usage;
mod words;

pub use action::Action;
pub use billing::{Country, LegalName, PostalAddress, TaxId};
pub use card::{card_number_refusal, contains_card_number, mask_card_numbers, refuse_card_numbers};
pub use email::Email;
pub use grant::{DEFAULT_ROLE, Grant, Names, Permission, unknown_name};
pub use money::{Currency, MAX_AMOUNT_MINOR, Money, prorate};
pub use names::{ChildName, OrgRef, UserName, UserRef, is_valid_subject};
pub use org::{Description, DisplayName, Etag, Slug};
pub use page::{PageRequest, PageToken};
pub use payment::{FailureMessage, ProcessorReference};
pub use quote::quoted;
pub use secret::Secret;
pub use text::{is_hidden, shows_nothing};
pub use time::is_storable_time;
pub use usage::{ChargeDescription, UsageInterval};
pub use words::{count, plural};
