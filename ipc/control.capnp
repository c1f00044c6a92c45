# The per-VM control socket (`moss run --name N`): `moss ls`, `moss stats N`, `moss stop N` and
# `moss exec N` talk to the broker that runs the VM.
#
# Transport: SOCK_SEQPACKET Unix socket in the runtime directory, one Cap'n Proto message per
# packet (ipc/channel.h), one request and one reply per connection. Only processes of the
# broker's own user can connect (the directory is 0700).
@0xc7f2f45777afcfd9;

$import "/capnp/c++.capnp".namespace("moss::ipc");
using Json = import "/capnp/compat/json.capnp";

const controlProtocolVersion :UInt32 = 1;

struct ControlRequest {
  version @0 :UInt32;
  union {
    stats @1 :Void;
    stop @2 :Void;      # As SIGTERM to the broker: the VM is stopped in order.
    pause @3 :Void;     # Every vCPU parked outside KVM_RUN; answered once they are.
    resume @4 :Void;
    agent @5 :Void;     # `moss exec`: a connection to the guest agent, answered `agent` with the
                        # socket attached (SCM_RIGHTS). The broker has sent "CONNECT 1124\n" on it
                        # to the vsock worker; the client reads the "OK <n>" line, then speaks the
                        # agent protocol (guest/agent/protocol.h).
    # Write the VM into a spore (moss suspend); answered `suspended` once it is written (and
    # the VM resumed with keepRunning, else stopping), or `error` with the sentence why not.
    suspend @6 :SuspendRequest;
  }
}

struct SuspendRequest {
  spore @0 :Text;         # Absolute path of the spore to write (must not exist).
  store @1 :Text;         # Absolute path of the chunk store.
  keepRunning @2 :Bool;   # Resume the VM afterwards instead of stopping it.
}

# VmStats is also the JSON of `moss stats --json` (ipc/json.h): $Json.name gives its keys.
struct ProcessStats {
  role @0 :Text;        # "broker", "vcpu", "blk worker for disk.img"
  pid @1 :Int32;
  rssKib @2 :UInt64 $Json.name("rss_kib");    # Resident set now.
  cpuMs @3 :UInt64 $Json.name("cpu_ms");     # User + system CPU time so far.
}

struct VmStats {
  name @0 :Text;
  uptimeMs @1 :UInt64 $Json.name("uptime_ms");
  cpus @2 :UInt32;
  memBytes @3 :UInt64 $Json.name("mem_bytes");
  state @4 :Text;       # "running" or "stopping"
  processes @5 :List(ProcessStats);
  disks @6 :List(Text);
  diskStats @7 :List(DiskStats) $Json.name("disk_stats");
  vsockCid @8 :UInt32 $Json.name("vsock_cid");      # The guest's vsock CID (0: none).
  vsockSocket @9 :Text $Json.name("vsock_socket");     # Its hybrid socket: CONNECT <port> here; guest port N -> <socket>_N.
  missingStats @10 :List(Text) $Json.name("missing_stats");  # Workers whose stats did not come in time: "blk worker for d.img: why".
}

struct DiskStats {
  worker @0 :Text;
  readRequests @1 :UInt64 $Json.name("read_requests");
  writeRequests @2 :UInt64 $Json.name("write_requests");
  flushRequests @3 :UInt64 $Json.name("flush_requests");
  otherRequests @4 :UInt64 $Json.name("other_requests");
  bytesRead @5 :UInt64 $Json.name("bytes_read");
  bytesWritten @6 :UInt64 $Json.name("bytes_written");
  errors @7 :UInt64;
  inFlight @8 :UInt32 $Json.name("in_flight");
}

struct ControlReply {
  version @0 :UInt32;
  union {
    stats @1 :VmStats;
    stopping @2 :Void;
    error @3 :Text;
    paused @4 :Void;
    resumed @5 :Void;
    agent @6 :Void;     # The agent connection is attached to this packet.
    suspended @7 :Text;   # One sentence: where the spore is, and what it took.
  }
}
