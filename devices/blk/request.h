// virtio-blk requests (virtio 1.2, 5.2.6): a pure parser from a descriptor chain to a request,
// with no disk I/O. It checks the header, the direction and length of every part, and the
// sector range against the disk's capacity with checked arithmetic.
//
// A malformed request is an Error value carrying the virtio status the guest gets back
// (IOERR or UNSUPP); if the chain has no room even for the status byte, `status` is empty and
// the device can only return the chain with length 0.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/virtio/queue.h"

namespace moss::blk {

constexpr uint64_t kSectorSize = 512;
constexpr uint32_t kMaxDiscardSegments = 256;  // Offered in config (max_discard_seg).
constexpr uint32_t kMaxDiscardSectors = 1u << 22;  // Per segment: 2 GiB (max_discard_sectors).
constexpr size_t kIdBytes = 20;  // VIRTIO_BLK_ID_BYTES.

enum class Type : uint32_t { kIn = 0, kOut = 1, kFlush = 4, kGetId = 8, kDiscard = 11, kWriteZeroes = 13 };
enum Status : uint8_t { kOk = 0, kIoErr = 1, kUnsupported = 2 };

struct Range {
  uint64_t sector;
  uint32_t sectors;
  bool unmap;  // WRITE_ZEROES may deallocate.
};

struct Request {
  Type type = Type::kIn;
  uint64_t sector = 0;
  // IN, GET_ID: guest buffers to fill. OUT: guest buffers to write to disk.
  std::vector<std::span<uint8_t>> in_data;
  std::vector<std::span<const uint8_t>> out_data;
  uint64_t data_bytes = 0;
  std::vector<Range> ranges;       // DISCARD, WRITE_ZEROES.
  std::span<uint8_t> status;       // The status byte (last writable byte of the chain).
};

struct ParseError {
  Status status;                 // What the guest is told.
  std::span<uint8_t> status_byte;  // Where to tell it; empty if the chain has no writable byte.
  std::string message;
};

struct DiskGeometry {
  uint64_t capacity_sectors = 0;
  bool read_only = false;
  bool discard = true;       // VIRTIO_BLK_F_DISCARD negotiated.
  bool write_zeroes = true;  // VIRTIO_BLK_F_WRITE_ZEROES negotiated.
};

// Either a request or the error to report. Pure.
struct Parsed {
  std::optional<Request> request;
  std::optional<ParseError> error;
};
Parsed parse_request(const virtio::DescriptorChain& chain, const DiskGeometry& disk);

}  // namespace moss::blk
