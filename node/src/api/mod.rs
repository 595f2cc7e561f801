//! Adapters from wire protocols to the service layer. Each converts its
//! request types to service calls and `NodeError` to its own statuses:
//! `grpc` (the public `floe.v1` API), `rest` (Lambda's REST API), `auth`
//! (signatures on gRPC), `unverified` (reading a body before its
//! signature is checked, for both), `tls` (TLS on both), `internal`
//! (node-to-node, `floe.internal.v1`).

pub mod auth;
pub mod grpc;
pub mod internal;
pub mod rest;
pub mod tls;
pub mod unverified;
