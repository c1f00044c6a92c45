// The malformed virtio-blk chains a hostile guest can offer, written once and used twice: the
// acceptance test hands each to a real backend (blk_acceptance_test.cc), and the seed
// generator turns each into fuzz seeds (fuzz_seeds_test.cc), so the fuzz corpus holds every
// case the acceptance test covers.
//
// A case writes raw descriptors (and the request header) into a fresh ring through the
// DriverQueue's raw writers and publishes it at descriptor 0; it does not kick. Where the
// buffers go is the caller's ChainLayout, so the same case fits a 64 MiB test guest and the
// fuzzer's two 64 KiB regions.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "base/guest_memory.h"
#include "base/result.h"
#include "devices/virtio/driver.h"

namespace moss::harness {

struct ChainLayout {
  uint64_t header_gpa = 0;   // 16 bytes.
  uint64_t data_gpa = 0;     // data_bytes.
  uint32_t data_bytes = 512; // A whole number of sectors.
  uint64_t status_gpa = 0;   // 1 byte.
  uint64_t table_gpa = 0;    // 128 bytes, 16-aligned: two 4-entry indirect tables.
  uint64_t outside_gpa = 0;  // No guest memory here.
  uint64_t region_end = 0;   // End of the memory region holding data_gpa.
  uint64_t capacity_sectors = 0;
};

// Where a correct device notices the fault.
enum class CaughtBy {
  kRing,     // The descriptor chain or ring itself is bad (devices/virtio's walker or Queue).
  kRequest,  // The chain is well formed; the virtio-blk request in it is not (IOERR/UNSUPP).
};

struct MalformedCase {
  const char* name;         // Test and seed names: "descriptor-loop".
  const char* description;  // One line.
  CaughtBy caught_by;
  bool needs_indirect;      // Only meaningful with VIRTIO_F_INDIRECT_DESC negotiated.
  bool status_readable;     // The status byte is device-readable: the device must not write it.
  bool data_readable;       // The data buffer is device-readable: the device must not write it.
  std::function<Result<void>(virtio::DriverQueue&, const GuestMemory&, const ChainLayout&)> build;
};

const std::vector<MalformedCase>& malformed_cases();

// What the data buffer and status byte hold before a case runs, so writes to them show.
constexpr uint8_t kDataSentinel = 0xa5;
constexpr uint8_t kStatusSentinel = 0xff;
// Fills the data buffer and status byte with the sentinels.
Result<void> fill_sentinels(const GuestMemory& mem, const ChainLayout& layout);

// The used ring as the device left it, read straight from guest memory (the DriverQueue
// would refuse a head it did not hand out, and these chains were written raw).
uint16_t used_idx(const GuestMemory& mem, const virtio::QueueConfig& config);
virtio::UsedElem used_elem(const GuestMemory& mem, const virtio::QueueConfig& config, uint16_t idx);

}  // namespace moss::harness
