#include "store/manifest.h"

#include <capnp/dynamic.h>
#include <capnp/schema.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstring>
#include <set>

namespace moss::store {
namespace {

// Reads every field of `value` as its schema says, so that a malformed pointer anywhere
// (out of bounds, of the wrong kind, text without its NUL) throws here, inside decode's
// exception boundary, and never later in a reader of the view.
void touch(capnp::DynamicValue::Reader value) {
  switch (value.getType()) {
    case capnp::DynamicValue::STRUCT: {
      auto s = value.as<capnp::DynamicStruct>();
      for (auto field : s.getSchema().getFields()) {
        if (s.has(field)) touch(s.get(field));
      }
      break;
    }
    case capnp::DynamicValue::LIST:
      for (auto element : value.as<capnp::DynamicList>()) touch(element);
      break;
    case capnp::DynamicValue::TEXT:
      (void)value.as<capnp::Text>().size();
      break;
    case capnp::DynamicValue::DATA:
      (void)value.as<capnp::Data>().size();
      break;
    default:
      break;
  }
}

Result<uint32_t> check_header(std::span<const uint8_t> bytes) {
  if (bytes.size() < 8 || bytes.size() % sizeof(capnp::word) != 0) {
    return make_error("the manifest is truncated or malformed (" + std::to_string(bytes.size()) +
                      " bytes is not a whole Cap'n Proto message)");
  }
  if (bytes.size() > kMaxManifestBytes) return make_error("the manifest is larger than any spore's (over 64 MiB)");
  uint32_t nseg_minus_1;
  std::memcpy(&nseg_minus_1, bytes.data(), 4);
  if (nseg_minus_1 >= 512) return make_error("the manifest is malformed (too many segments)");
  uint64_t nseg = nseg_minus_1 + 1;
  uint64_t table_words = nseg / 2 + 1;
  if (table_words * 8 > bytes.size()) return make_error("the manifest is truncated (in its segment table)");
  uint64_t total = table_words;
  for (uint64_t i = 0; i < nseg; i++) {
    uint32_t seg_words;
    std::memcpy(&seg_words, bytes.data() + 4 + 4 * i, 4);
    total += seg_words;
  }
  if (total * 8 > bytes.size()) return make_error("the manifest is truncated");
  if (total * 8 < bytes.size()) return make_error("the manifest is malformed (bytes after its end)");
  return static_cast<uint32_t>(nseg);
}

}  // namespace

std::vector<ChunkId> Manifest::stored_chunks() const {
  std::set<ChunkId> ids;
  for (const auto& r : ranges_)
    for (const auto& c : r.chunks)
      if (!c.zero) ids.insert(c.id);
  return {ids.begin(), ids.end()};
}

size_t Manifest::chunk_size(const MemoryRange& range, size_t i) const {
  uint64_t start = uint64_t{chunk_bytes_} * i;
  MOSS_ASSERT(start < range.bytes);
  return static_cast<size_t>(std::min<uint64_t>(chunk_bytes_, range.bytes - start));
}

std::vector<uint8_t> encode_message(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(message);
  auto bytes = flat.asBytes();
  return {bytes.begin(), bytes.end()};
}

// The checks beyond the message's own structure; fills the map of `m`.
Result<void> check_and_copy(spore::Manifest::Reader root, Manifest& mm) {
  Manifest* m = &mm;
  if (root.getFormatVersion() != spore::SPORE_FORMAT_VERSION) {
    return make_error("the manifest has format version " + std::to_string(root.getFormatVersion()) +
                      ", which this moss does not know (it reads version " +
                      std::to_string(spore::SPORE_FORMAT_VERSION) + ")");
  }
  m->has_parent_ = root.getParent().getHi() != 0 || root.getParent().getLo() != 0;

  // RAM: page aligned, sorted, non-overlapping.
  struct Span {
    uint64_t start, end;
  };
  std::vector<Span> ram;
  uint64_t ram_total = 0;
  for (auto r : root.getMachine().getRamRanges()) {
    uint64_t a = r.getGuestAddr(), n = r.getBytes();
    if (n == 0 || a % 4096 || n % 4096 || a + n < a) {
      return make_error("the manifest's RAM range at " + std::to_string(a) + " is empty, unaligned or wraps");
    }
    if (!ram.empty() && a < ram.back().end) return make_error("the manifest's RAM ranges overlap or are unsorted");
    ram.push_back({a, a + n});
    ram_total += n;
  }

  auto memory = root.getMemory();
  uint32_t cb = memory.getChunkBytes();
  if (cb < 4096 || (cb & (cb - 1)) != 0 || cb > (64u << 20)) {
    return make_error("the manifest's chunk size " + std::to_string(cb) + " is not a power of two from 4 KiB to 64 MiB");
  }
  m->chunk_bytes_ = cb;
  uint64_t covered = 0, prev_end = 0;
  for (auto r : memory.getRanges()) {
    uint64_t a = r.getGuestAddr(), n = r.getBytes();
    std::string where = "the manifest's memory range at " + std::to_string(a);
    if (n == 0 || a % 4096 || n % 4096 || a + n < a) return make_error(where + " is empty, unaligned or wraps");
    if (covered && a < prev_end) return make_error(where + " overlaps the one before it or is out of order");
    bool inside = std::any_of(ram.begin(), ram.end(), [&](const Span& s) { return a >= s.start && a + n <= s.end; });
    if (!inside) return make_error(where + " is outside the machine's RAM");
    uint64_t want = (n + cb - 1) / cb;
    auto chunks = r.getChunks();
    if (chunks.size() != want) {
      return make_error(where + " has " + std::to_string(chunks.size()) + " chunks where its " + std::to_string(n) +
                        " bytes need " + std::to_string(want));
    }
    MemoryRange out{a, n, {}};
    out.chunks.reserve(chunks.size());
    for (auto c : chunks) {
      if (c.getZero() && (c.getHi() || c.getLo())) return make_error(where + " has a zero chunk with a hash");
      out.chunks.push_back(ChunkRef{c.getZero(), ChunkId{c.getHi(), c.getLo()}});
    }
    m->ranges_.push_back(std::move(out));
    covered += n;
    prev_end = a + n;
  }
  if (!m->has_parent_ && covered != ram_total) {
    return make_error("the manifest's memory map covers " + std::to_string(covered) + " bytes of the machine's " +
                      std::to_string(ram_total) + " bytes of RAM, and it has no parent to take the rest from");
  }
  return {};
}

Result<std::unique_ptr<Manifest>> decode_manifest(std::span<const uint8_t> bytes) {
  MOSS_TRY_VOID(check_header(bytes));
  auto m = std::make_unique<Manifest>();
  m->words_ = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(m->words_.begin(), bytes.data(), bytes.size());
  // Cap'n Proto checks pointers lazily and charges every read to the reader's traversal
  // budget, which bounds the work a crafted message (many pointers to one list) can cause.
  // The check reads every field once (touch) and copies the memory map, all inside one
  // exception boundary, on a reader of its own; the view then gets a fresh reader with four
  // times that budget, so that its users (restore, inspect) can read every field again and
  // nothing they read can throw.
  capnp::ReaderOptions options;
  options.traversalLimitInWords = m->words_.size() * 4 + 1024;
  options.nestingLimit = 16;
  kj::ArrayPtr<const capnp::word> words(m->words_.begin(), m->words_.size());
  Result<void> checked;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    capnp::FlatArrayMessageReader reader(words, options);
    auto root = reader.getRoot<spore::Manifest>();
    touch(capnp::toDynamic(root));
    checked = check_and_copy(root, *m);
  })) {
    // One sentence: Cap'n Proto's description may span lines.
    std::string why = e->getDescription().cStr();
    for (char& ch : why)
      if (ch == '\n' || ch == '\r') ch = ' ';
    return make_error("the manifest is malformed: " + why);
  }
  if (!checked) return std::move(checked).take_error();
  options.traversalLimitInWords *= 4;
  m->reader_ = std::make_unique<capnp::FlatArrayMessageReader>(words, options);
  m->root_ = m->reader_->getRoot<spore::Manifest>();
  return m;
}


}  // namespace moss::store
