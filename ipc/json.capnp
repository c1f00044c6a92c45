# JSON outputs that are not messages of a channel, as structs for ipc/json.h (capnp's
# JsonCodec). The stats of `moss stats --json` are control.capnp's VmStats.
@0x9e595482f242ec32;

$import "/capnp/c++.capnp".namespace("moss::ipc");
using Json = import "/capnp/compat/json.capnp";

# What a vhost-user backend prints for --print-capabilities: QEMU's
# docs/interop/vhost-user.json, VHostUserBackendCapabilities, e.g.
#   {"type": "block", "features": ["read-only", "blk-file"]}
struct BackendCapabilities {
  type @0 :Text;              # VHostUserBackendType: "block", "vsock", "net", "fs", ...
  features @1 :List(Text);    # The type's features (VHostUserBackendBlockFeature, ...).
}

# What `moss run --stats FILE` writes when the VM ends (bench/ reads it): when each step came,
# in CLOCK_MONOTONIC nanoseconds (0: it never came), and the peak RSS and CPU time of the
# broker and of its children (the vcpu process and the workers it reaped).
struct RunFigures {
  spawnNs @0 :UInt64 $Json.name("spawn_ns");                      # The vcpu process was spawned.
  firstRunNs @1 :UInt64 $Json.name("first_run_ns");               # Its first KVM_RUN.
  firstExitNs @2 :UInt64 $Json.name("first_exit_ns");             # The guest's first exit port write.
  agentConnectedNs @3 :UInt64 $Json.name("agent_connected_ns");   # The guest agent answered.
  commandExitedNs @4 :UInt64 $Json.name("command_exited_ns");     # The command's exit came back.
  brokerMaxrssKib @5 :Int64 $Json.name("broker_maxrss_kib");
  brokerCpuMs @6 :Float64 $Json.name("broker_cpu_ms");
  vcpuMaxrssKib @7 :Int64 $Json.name("vcpu_maxrss_kib");
  vcpuCpuMs @8 :Float64 $Json.name("vcpu_cpu_ms");
}
