// A test helper for the request and packet parsers: descriptor chains built out of host
// buffers, since a parser only sees the chain's spans.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "devices/virtio/queue.h"

namespace moss::virtio::testing {

struct ChainBuilder {
  std::vector<std::vector<uint8_t>> storage;
  DescriptorChain chain;
  ChainBuilder() { storage.reserve(16); }  // Spans point into storage: no reallocation.
  ChainBuilder& readable(std::vector<uint8_t> bytes) {
    storage.push_back(std::move(bytes));
    chain.readable.emplace_back(storage.back().data(), storage.back().size());
    chain.readable_bytes += storage.back().size();
    return *this;
  }
  // `n` writable bytes, filled with 0xee so a parser's writes show.
  ChainBuilder& writable(size_t n) {
    storage.emplace_back(n, 0xee);
    chain.writable.emplace_back(storage.back().data(), n);
    chain.writable_bytes += n;
    return *this;
  }
};

}  // namespace moss::virtio::testing
