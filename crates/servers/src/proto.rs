//! The Rust types, servers and clients generated from `proto/tenancy/**` (package
//! `tenancy.<area>.v1` lives in `proto::<area>::v1`).

/// Messages shared by every tenancy gRPC API (`tenancy.common.v1`).
pub mod common {
    /// Version 1 of the common messages.
    pub mod v1 {
        tonic::include_proto!("tenancy.common.v1");
    }
}

/// The identity API (`tenancy.identity.v1`).
pub mod identity {
    /// Version 1 of the identity API.
    pub mod v1 {
        tonic::include_proto!("tenancy.identity.v1");
    }
}

/// The policy API (`tenancy.policy.v1`).
pub mod policy {
    /// Version 1 of the policy API.
    pub mod v1 {
        tonic::include_proto!("tenancy.policy.v1");
    }
}

/// The encoded `FileDescriptorSet` of every tenancy proto file and its imports, as
/// served by gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tenancy_descriptor.bin"));
