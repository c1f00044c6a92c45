// libFuzzer target: the agent protocol decoder (guest/agent/protocol.h), both directions.
// Input: byte 0 = direction (bit 0: 1 to the host, 0 to the agent) and the size of the pieces
// the stream is fed in (bits 1-7, plus 1); the rest is the byte stream. Checks, besides "no
// crash, no leak, no read past the end": the incremental decoder and decode_frame() agree,
// every decoded frame passes check_frame(), and re-encoding it gives back exactly the bytes it
// was decoded from (the encoding is canonical), which decode again to the same frame.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "guest/agent/protocol.h"

using moss::agent::DecodeStatus;
using moss::agent::Decoder;
using moss::agent::Direction;
using moss::agent::Frame;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  Direction dir = (data[0] & 1) ? Direction::kToHost : Direction::kToAgent;
  size_t piece = (data[0] >> 1) + 1;
  const uint8_t* stream = data + 1;
  size_t n = size - 1;

  // Whole-buffer decoding, frame after frame.
  size_t at = 0, whole_frames = 0;
  bool whole_failed = false;
  for (;;) {
    Frame f;
    size_t used = 0;
    moss::Error err;
    DecodeStatus s = moss::agent::decode_frame(dir, stream + at, n - at, &f, &used, &err);
    if (s != DecodeStatus::kFrame) {
      if (s == DecodeStatus::kError && err.message.empty()) abort();
      whole_failed = s == DecodeStatus::kError;
      break;
    }
    ++whole_frames;
    if (used < moss::agent::kHeaderSize || used > n - at) abort();
    if (!moss::agent::check_frame(dir, f).ok()) abort();
    std::string again;
    if (!moss::agent::encode(dir, f, &again).ok()) abort();
    if (again != std::string(reinterpret_cast<const char*>(stream + at), used)) abort();
    Frame g;
    size_t used2 = 0;
    if (moss::agent::decode_frame(dir, reinterpret_cast<const uint8_t*>(again.data()), again.size(), &g, &used2,
                                  &err) != DecodeStatus::kFrame ||
        !(g == f))
      abort();
    at += used;
  }

  // The incremental decoder, fed in pieces, yields the same frames and stops where it did.
  Decoder d(dir);
  size_t frames = 0;
  bool failed = false;
  for (size_t i = 0; i < n && !failed; i += piece) {
    size_t k = piece < n - i ? piece : n - i;
    d.feed(stream + i, k);
    Frame f;
    DecodeStatus s;
    while ((s = d.next(&f)) == DecodeStatus::kFrame) ++frames;
    failed = s == DecodeStatus::kError;
    if (d.buffered() > moss::agent::kHeaderSize + moss::agent::kMaxPayload + piece) abort();
  }
  if (frames != whole_frames || failed != whole_failed) abort();
  return 0;
}
