#include "devices/blk/request.h"

#include <cstring>

namespace moss::blk {
namespace {

struct [[gnu::packed]] Header {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(Header) == 16);

struct [[gnu::packed]] DiscardSegment {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;  // Bit 0: unmap (WRITE_ZEROES only); the rest reserved (must be 0).
};
static_assert(sizeof(DiscardSegment) == 16);

Parsed fail(Status s, std::span<uint8_t> status, std::string message) {
  return Parsed{std::nullopt, ParseError{s, status, std::move(message)}};
}

// [sector, sector + sectors) must lie inside the disk; no overflow possible.
bool in_range(uint64_t sector, uint64_t sectors, uint64_t capacity) {
  return sector <= capacity && sectors <= capacity - sector;
}

}  // namespace

Parsed parse_request(const virtio::DescriptorChain& chain, const DiskGeometry& disk) {
  // The status byte is the chain's last writable byte; find it first so that every later
  // error can be reported through it.
  if (chain.writable_bytes == 0 || chain.writable.empty()) {
    return fail(kIoErr, {}, "the request has no writable status byte");
  }
  std::span<uint8_t> last = chain.writable.back();
  std::span<uint8_t> status = last.subspan(last.size() - 1, 1);
  const uint64_t writable_data = chain.writable_bytes - 1;

  virtio::ChainReader reader(chain);
  auto hdr = reader.read_obj<Header>();
  if (!hdr) return fail(kIoErr, status, "the request header is shorter than 16 bytes");

  Request req;
  req.sector = hdr->sector;
  req.status = status;
  switch (hdr->type) {
    case static_cast<uint32_t>(Type::kIn):
    case static_cast<uint32_t>(Type::kGetId): {
      req.type = static_cast<Type>(hdr->type);
      if (reader.remaining() != 0) return fail(kIoErr, status, "a read request carries device-readable data");
      virtio::ChainWriter writer(chain);
      auto data = writer.take(writable_data);
      MOSS_ASSERT(data.ok());  // writable_data < writable_bytes by construction.
      req.in_data = std::move(*data);
      req.data_bytes = writable_data;
      if (req.type == Type::kGetId) {
        if (writable_data < 1) return fail(kIoErr, status, "GET_ID has no room for the id");
        return Parsed{std::move(req), std::nullopt};
      }
      if (writable_data % kSectorSize != 0) return fail(kIoErr, status, "a read is not a whole number of sectors");
      if (!in_range(req.sector, writable_data / kSectorSize, disk.capacity_sectors)) {
        return fail(kIoErr, status, "a read goes past the end of the disk");
      }
      return Parsed{std::move(req), std::nullopt};
    }
    case static_cast<uint32_t>(Type::kOut): {
      req.type = Type::kOut;
      if (disk.read_only) return fail(kIoErr, status, "a write to a read-only disk");
      if (writable_data != 0) return fail(kIoErr, status, "a write request has device-writable data");
      uint64_t n = reader.remaining();
      if (n % kSectorSize != 0) return fail(kIoErr, status, "a write is not a whole number of sectors");
      if (!in_range(req.sector, n / kSectorSize, disk.capacity_sectors)) {
        return fail(kIoErr, status, "a write goes past the end of the disk");
      }
      auto data = reader.take(n);
      MOSS_ASSERT(data.ok());
      req.out_data = std::move(*data);
      req.data_bytes = n;
      return Parsed{std::move(req), std::nullopt};
    }
    case static_cast<uint32_t>(Type::kFlush):
      req.type = Type::kFlush;
      if (reader.remaining() != 0 || writable_data != 0) return fail(kIoErr, status, "a flush carries data");
      return Parsed{std::move(req), std::nullopt};
    case static_cast<uint32_t>(Type::kDiscard):
    case static_cast<uint32_t>(Type::kWriteZeroes): {
      req.type = static_cast<Type>(hdr->type);
      bool zeroes = req.type == Type::kWriteZeroes;
      if ((zeroes && !disk.write_zeroes) || (!zeroes && !disk.discard)) {
        return fail(kUnsupported, status, "DISCARD or WRITE_ZEROES was not negotiated");
      }
      if (disk.read_only) return fail(kIoErr, status, "a discard or write-zeroes on a read-only disk");
      uint64_t n = reader.remaining();
      if (n == 0 || n % sizeof(DiscardSegment) != 0 || writable_data != 0) {
        return fail(kIoErr, status, "discard or write-zeroes segments have a bad length");
      }
      if (n / sizeof(DiscardSegment) > kMaxDiscardSegments) {
        return fail(kIoErr, status, "too many discard or write-zeroes segments");
      }
      while (reader.remaining() > 0) {
        auto seg = reader.read_obj<DiscardSegment>();
        MOSS_ASSERT(seg.ok());
        bool unmap = seg->flags & 1;
        if ((seg->flags & ~1u) != 0 || (unmap && !zeroes)) {
          return fail(kUnsupported, status, "a discard or write-zeroes segment has unsupported flags");
        }
        if (seg->num_sectors > kMaxDiscardSectors || !in_range(seg->sector, seg->num_sectors, disk.capacity_sectors)) {
          return fail(kIoErr, status, "a discard or write-zeroes segment goes past the end of the disk");
        }
        req.ranges.push_back({seg->sector, seg->num_sectors, unmap});
      }
      return Parsed{std::move(req), std::nullopt};
    }
    default:
      return fail(kUnsupported, status, "unknown request type " + std::to_string(hdr->type));
  }
}

}  // namespace moss::blk
