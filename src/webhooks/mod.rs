//! Webhooks, the HTTP side: where deliveries may go (`address`), how signing
//! secrets are kept (`sealing`) and used (`signing`), how one event is sent
//! (`sender`) and how a round delivers the due endpoints (`delivery`). The
//! endpoints and their delivery state live in `store::webhooks` and
//! `store::webhook_delivery`.

pub mod address;
pub mod delivery;
pub mod sealing;
pub mod sender;
pub mod signing;
