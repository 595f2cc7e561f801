//! Adapters from wire protocols to the service layer. Each converts its
//! request types to service calls and `ServiceError` to its own statuses.

pub mod auth;
pub mod error;
pub mod grpc;
pub mod rest;
