// The virtio-blk device's module (devices/module.h): what the broker needs to plan a VM's
// disks (each a moss-blk worker, or an external vhost-user-blk backend it connects to) and
// the guest device the vcpu process makes of each. Linked by the broker; not the worker.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/module.h"

namespace moss::device::blk {

// A virtio-blk disk: a file or block device served by a moss-blk worker the broker starts,
// or an already running vhost-user-blk backend (e.g. qemu-storage-daemon) at a socket.
struct Disk {
  std::string path;          // Image file, or the backend's socket with vhost_user.
  bool readonly = false;
  bool vhost_user = false;
  // vhost_user: the backend gets the guest's memory, so whoever listens at `path` must be
  // this user or root, or the uid given with ",peer-uid=N" (the user's explicit trust).
  std::optional<uint32_t> peer_uid;
};

// Plans `disks` in guest order (/dev/vda first): opens and locks each image (the jailed worker
// has no path to open), refuses one file given twice, connects to each external backend and
// checks who runs it.
Result<std::vector<Device>> plan_disks(const std::vector<Disk>& disks, const Vm& vm);

// What the guest sees: a virtio-blk function with a queue per vCPU (fewer if the backend
// offers fewer).
GuestDevice guest_device(uint32_t cpus);

// A moss-blk worker's limits serving `queues` queues on a disk of `disk_bytes`.
sandbox::Limits limits(uint32_t queues, uint64_t disk_bytes);
// The size of a disk image or block device (0 if it cannot be told).
uint64_t disk_bytes(int fd);

const Module& module();

}  // namespace moss::device::blk
