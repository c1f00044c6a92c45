# Control messages between the broker and a device worker (every moss worker: the runtime in
# devices/worker/ answers them). The worker holds only this interface: it cannot ask the broker
# for anything. The data path (vhost-user on another socket, guest RAM, eventfds) never passes
# here, and neither do quiescing and device state: those travel over vhost-user itself
# (GET_VRING_BASE stops a ring and drains it; SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE move the
# state), so that any frontend can checkpoint a moss worker. What stays here is what vhost-user
# has no message for.
#
# Transport: one Cap'n Proto message per SOCK_SEQPACKET packet on the socketpair made at spawn
# (ipc/channel.h); the worker gets it as an inherited fd (--control-fd N). Each request gets
# exactly one reply, in order. Bump workerProtocolVersion on incompatible changes.
@0xf94ae7d00493955b;

$import "/capnp/c++.capnp".namespace("moss::ipc");

# 2: device-neutral describe/stats; quiesce, saveState, restoreState and resume left for
# vhost-user's own messages.
const workerProtocolVersion :UInt32 = 2;

struct BrokerToWorker {
  version @0 :UInt32;
  union {
    describe @1 :Void;
    stats @2 :Void;
    # Stop taking requests, finish those in flight, flush (blk: fdatasync the disk), reply
    # and exit 0.
    shutdown @3 :Void;
  }
}

# A device-specific fact, as text (blk: disk, readOnly, capacityBytes; vsock: guestCid).
struct Detail {
  key @0 :Text;
  value @1 :Text;
}

struct WorkerDescription {
  kind @0 :Text;             # "blk", "vsock", "null", ...
  numQueues @1 :UInt32;
  details @2 :List(Detail);
}

# A device-specific counter (blk: readRequests, ...; vsock: packetsToGuest, ...).
struct Counter {
  name @0 :Text;
  value @1 :UInt64;
}

struct WorkerStats {
  requests @0 :UInt64;       # Requests (chains, packets) returned to the guest.
  errors @1 :UInt64;         # Of those, answered with an error.
  bytesIn @2 :UInt64;        # Payload bytes taken from the guest (blk: written).
  bytesOut @3 :UInt64;       # Payload bytes given to the guest (blk: read).
  inFlight @4 :UInt32;       # Taken from a ring and not yet returned.
  counters @5 :List(Counter);
}

struct WorkerToBroker {
  version @0 :UInt32;
  union {
    description @1 :WorkerDescription;
    stats @2 :WorkerStats;
    shuttingDown @3 :Void;
    error @4 :Text;           # The request was refused; one sentence.
  }
}
