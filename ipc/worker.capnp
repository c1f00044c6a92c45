# Control messages between the broker and a device worker (moss-blk today). The worker holds
# only this interface: it cannot ask the broker for anything. The data path (vhost-user on
# another socket, guest RAM, eventfds) never passes here.
#
# Transport: one Cap'n Proto message per SOCK_SEQPACKET packet on the socketpair made at spawn
# (ipc/channel.h); the worker gets it as an inherited fd (--control-fd N). Each request gets
# exactly one reply, in order. Bump workerProtocolVersion on incompatible changes.
@0xf94ae7d00493955b;

$import "/capnp/c++.capnp".namespace("moss::ipc");

const workerProtocolVersion :UInt32 = 1;

struct BrokerToWorker {
  version @0 :UInt32;
  union {
    describe @1 :Void;
    # Stop taking new requests from the rings and wait until every request in flight has
    # completed and been returned to the guest. Kicks that arrive meanwhile stay pending.
    quiesce @2 :Void;
    # Only while quiesced: the device's whole state (ring indices, negotiated features,
    # config), in the device's own versioned format (devices/blk/state.h).
    saveState @3 :Void;
    # Only while quiesced: replace the device's state with a saved one.
    restoreState @4 :Data;
    # Leave the quiesced state: process the rings again, including kicks that came meanwhile.
    resume @5 :Void;
    stats @6 :Void;
    # Finish in-flight I/O, flush the disk and exit 0.
    shutdown @7 :Void;
  }
}

struct WorkerDescription {
  kind @0 :Text;             # "blk"
  disk @1 :Text;             # The path or fd the worker serves.
  readOnly @2 :Bool;
  capacityBytes @3 :UInt64;
  numQueues @4 :UInt32;
}

struct WorkerStats {
  readRequests @0 :UInt64;
  writeRequests @1 :UInt64;
  flushRequests @2 :UInt64;
  otherRequests @3 :UInt64;   # discard, write-zeroes, get-id
  bytesRead @4 :UInt64;
  bytesWritten @5 :UInt64;
  errors @6 :UInt64;          # Requests answered with a non-OK status.
  inFlight @7 :UInt32;
  quiesced @8 :Bool;
}

struct WorkerToBroker {
  version @0 :UInt32;
  union {
    description @1 :WorkerDescription;
    quiesced @2 :Void;
    state @3 :Data;
    restored @4 :Void;
    resumed @5 :Void;
    stats @6 :WorkerStats;
    shuttingDown @7 :Void;
    error @8 :Text;           # The request was refused (e.g. saveState while running); one sentence.
  }
}
