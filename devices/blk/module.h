// The virtio-blk device's module (devices/module.h): what the broker needs to plan a VM's
// disks (each a moss-blk worker, or an external vhost-user-blk backend it connects to) and
// the guest device the vcpu process makes of each. Linked by the broker; not the worker.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
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

// What a spore records of a disk (store/spore.capnp Device.config for kind "blk"): its size
// and an identity, so that a restore refuses another disk or one that changed. The identity
// is XXH3-128 of the disk's first and last MiB (where partition tables and filesystem
// superblocks live, with their UUIDs and mount counts), read when the VM is paused for the
// spore; a restore reads the disk the user names (--disk) and compares.
// Encoded as 32 bytes, little-endian: u32 version (kDiskRecordVersion), u32 flags (bit 0:
// read-only), u64 size, u64 identity high half, u64 low half.
inline constexpr uint32_t kDiskRecordVersion = 1;
inline constexpr size_t kDiskRecordBytes = 32;
struct DiskRecord {
  uint64_t bytes = 0;
  uint64_t id_hi = 0, id_lo = 0;
  bool readonly = false;
  bool operator==(const DiskRecord&) const = default;
};
std::vector<uint8_t> encode_disk_record(const DiskRecord& r);
// Pure (fuzz/fuzz_spore_manifest.cc drives it): refuses another version or length.
Result<DiskRecord> decode_disk_record(std::span<const uint8_t> bytes);
// Reads the size and identity of the disk open at `fd`; `what` names it in errors.
Result<DiskRecord> record_disk(int fd, bool readonly, const std::string& what);
// Why a disk the user named for a restore is not the one the spore recorded; ok if it is.
Result<void> same_disk(const DiskRecord& recorded, const DiskRecord& given, const std::string& what);

const Module& module();

}  // namespace moss::device::blk
