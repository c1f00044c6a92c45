// The virtio-vsock device's module (devices/module.h): the moss-vsock worker `moss run` starts
// for every VM and the guest device the vcpu process makes of it. The host side (the CID
// lease, the hybrid socket host programs connect to, the connections the broker makes for
// the worker) is the broker's (broker/vm_vsock.h); it hands this module the worker's ends.
// Linked by the broker; not the worker.
#pragma once

#include <cstdint>

#include "base/fd.h"
#include "base/result.h"
#include "devices/module.h"

namespace moss::device::vsock {

// What the broker prepared for the worker.
struct Host {
  uint32_t cid = 0;        // The guest's CID (--guest-cid).
  UniqueFd listener;       // The hybrid socket host programs connect to (--uds-fd).
  UniqueFd connect;        // The worker's end of the connect channel (--connect-fd).
};

// The VM's vsock device: a moss-vsock worker given the vhost-user connection, the listener
// and the connect channel. Its jail keeps no host directory: it never opens a path (the
// broker connects to host ports for it, devices/vsock/hybrid.h).
Result<Device> plan(Host host, const Vm& vm);

// What the guest sees: a virtio-vsock function with its rx, tx and event queues.
GuestDevice guest_device();

// A moss-vsock worker carrying at most `max_connections` streams at once (its
// --max-connections; 256 unless told).
sandbox::Limits limits(uint32_t max_connections = 256);

const Module& module();

}  // namespace moss::device::vsock
