# JSON outputs that are not messages of a channel, as structs for ipc/json.h (capnp's
# JsonCodec). The stats of `moss stats --json` are control.capnp's VmStats.
@0x9e595482f242ec32;

$import "/capnp/c++.capnp".namespace("moss::ipc");

# What a vhost-user backend prints for --print-capabilities: QEMU's
# docs/interop/vhost-user.json, VHostUserBackendCapabilities, e.g.
#   {"type": "block", "features": ["read-only", "blk-file"]}
struct BackendCapabilities {
  type @0 :Text;              # VHostUserBackendType: "block", "vsock", "net", "fs", ...
  features @1 :List(Text);    # The type's features (VHostUserBackendBlockFeature, ...).
}
