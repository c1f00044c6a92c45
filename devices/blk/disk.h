// The disk behind a virtio-blk device: a raw image file or a block device, opened once (by
// the worker before it reads any guest byte) and probed for what the guest is told.
//
// O_DIRECT is used when the file supports it and every request the guest can legally send
// (512-byte offsets and lengths) meets its alignment; otherwise the page cache is used. With
// O_DIRECT, buffers must still start at `dio_mem_align`: the engine bounces requests whose
// guest buffers do not.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "base/fd.h"
#include "base/result.h"

namespace moss::blk {

struct DiskInfo {
  uint64_t size_bytes = 0;         // What the guest sees: capacity_sectors * 512.
  uint64_t capacity_sectors = 0;   // 512-byte sectors (a trailing partial sector is hidden).
  uint32_t physical_block_size = 512;  // Bytes; a power of two from 512 to 64 KiB.
  uint32_t opt_io_size = 0;        // Bytes; 0 when the disk does not say.
  bool block_device = false;
  bool read_only = false;
  bool direct = false;             // Opened with O_DIRECT.
  uint32_t dio_mem_align = 1;      // With `direct`: buffer addresses must be multiples of this.
  std::string serial;              // Default GET_ID serial, derived from device and inode.
};

class Disk {
 public:
  // Opens `path` read-write (or read-only), with O_DIRECT when it works, and locks it
  // (base/disk_lock.h): a disk another process writes, or reads while this would write, is
  // refused. Errors name the path.
  static Result<Disk> open(const std::string& path, bool read_only);
  // Takes an fd opened elsewhere (a broker, a test's memfd), switching it to O_DIRECT when
  // that works. Locking it is the opener's business (moss's broker locks what it passes).
  // `what` names it in errors ("the disk /x").
  static Result<Disk> from_fd(UniqueFd fd, bool read_only, const std::string& what);

  int fd() const { return fd_.get(); }
  const DiskInfo& info() const { return info_; }

 private:
  Disk(UniqueFd fd, DiskInfo info) : fd_(std::move(fd)), info_(std::move(info)) {}
  UniqueFd fd_;
  DiskInfo info_;
};

// The default serial for a file: "moss" and 16 hex digits of a hash of its device and inode,
// exactly VIRTIO_BLK_ID_BYTES (20) long, stable for as long as the file exists.
std::string serial_for(dev_t dev, ino_t ino);

}  // namespace moss::blk
