//! Generated protobuf and gRPC types shared by the coordinator and the SDK.
//!
//! Kept in its own crate so that participant services depend on the wire
//! contract without compiling the coordinator.

#![allow(clippy::all, missing_docs)]

/// `concord.v1`: the coordinator's public API.
pub mod v1 {
    tonic::include_proto!("concord.v1");
}

/// `concord.participant.v1`: the service participants implement.
pub mod participant {
    pub mod v1 {
        tonic::include_proto!("concord.participant.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Concord proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/concord_descriptor.bin"));
