//! orgd: the gRPC service that owns organizations — the tenant boundary that
//! groups users, their resources, roles and billing.
//!
//! A request flows `proto` → [`pb`] → [`api`] (validate, translate) → [`domain`]
//! rules → [`store`] (transactions) → PostgreSQL, after [`auth`] decided that the
//! caller may make it.

pub mod api;
pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod invoice_doc;
pub mod mail;
pub mod pb;
pub mod postgres;
pub mod secret_file;
pub mod server;
pub mod store;
pub mod webhooks;
pub mod workers;
