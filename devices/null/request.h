// moss-null's answer to one virtio-blk request: pure, over a descriptor chain already in host
// memory. Every request goes through blk::parse_request; what parses is answered OK (reads and
// GET_ID fill the guest's buffers with zeros, writes and flushes touch nothing), what does not
// gets the parser's status. No disk, no data copied.
#pragma once

#include <cstdint>
#include <optional>

#include "devices/blk/request.h"
#include "devices/virtio/queue.h"

namespace moss::null {

struct Answer {
  // Bytes written into the chain, status byte included: what the used element says. 0 when
  // the chain has no room for a status byte (the ring should then be treated as broken).
  uint32_t used_len = 0;
  std::optional<uint8_t> status;  // The status written; empty when there was nowhere to write it.
  blk::Type type = blk::Type::kIn;  // Of a request that parsed.
  uint64_t data_bytes = 0;          // Of a request that parsed.
};

// Writes the answer (zeros and the status byte) into `chain`'s writable buffers. With
// `zero_reads` false, a read's data buffers are left as they are and still reported written
// (qemu's null-co with read-zeroes=off: for measuring the transport alone); GET_ID is zeroed.
Answer answer_request(const virtio::DescriptorChain& chain, const blk::DiskGeometry& disk, bool zero_reads = true);

}  // namespace moss::null
