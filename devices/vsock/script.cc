#include "devices/vsock/script.h"

#include <algorithm>
#include <cstring>

namespace moss::vsock::testing {
namespace {

template <typename T>
void put(std::vector<uint8_t>& b, T v) {
  for (size_t i = 0; i < sizeof(T); i++) b.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i)));
}

// Reads the script; past its end every byte is 0.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> s) : s_(s) {}
  bool done() const { return pos_ >= s_.size(); }
  template <typename T>
  T get() {
    uint64_t v = 0;
    for (size_t i = 0; i < sizeof(T); i++) v |= static_cast<uint64_t>(byte()) << (8 * i);
    return static_cast<T>(v);
  }
  std::span<const uint8_t> take(size_t n) {
    n = std::min(n, s_.size() - std::min(pos_, s_.size()));
    auto out = s_.subspan(std::min(pos_, s_.size()), n);
    pos_ += n;
    return out;
  }

 private:
  uint8_t byte() { return pos_ < s_.size() ? s_[pos_++] : (pos_++, 0); }
  std::span<const uint8_t> s_;
  size_t pos_ = 0;
};

[[noreturn]] void broken_promise() { __builtin_trap(); }
void check(bool ok) {
  if (!ok) broken_promise();
}

class Runner {
 public:
  explicit Runner(uint8_t config)
      : table_(kScriptGuestCid, Limits{script_buf_alloc(config), 1u + ((config >> 3) & 3u), 4, 1000}) {}

  void run(Reader& r) {
    while (!r.done()) {
      switch (static_cast<Tag>(r.get<uint8_t>() % 8)) {
        case Tag::kPacket: packet(r); break;
        case Tag::kConnect:
          if (auto k = table_.host_connect(r.get<uint32_t>(), now_); k.ok()) known_.push_back(*k);
          break;
        case Tag::kReadable: {
          // As the device does: only when it asked to hear about it.
          if (auto k = pick(r.get<uint8_t>()); k && table_.host_side(*k).read) table_.host_readable(*k);
          break;
        }
        case Tag::kRx: rx(r); break;
        case Tag::kWritten: {
          auto k = pick(r.get<uint8_t>());
          uint32_t n = r.get<uint32_t>();
          if (!k) break;
          auto pieces = table_.to_host(*k);
          size_t pending = pieces[0].size() + pieces[1].size();
          table_.host_written(*k, n % (pending + 1));
          break;
        }
        case Tag::kTick:
          now_ += r.get<uint16_t>();
          table_.expire(now_);
          break;
        case Tag::kEof: {
          auto k = pick(r.get<uint8_t>());
          bool closed = r.get<uint8_t>() & 1;
          if (k && table_.find(*k)->state == ConnState::kEstablished) table_.host_eof(*k, closed);
          break;
        }
        case Tag::kFailed:
          if (auto k = pick(r.get<uint8_t>())) table_.host_failed(*k);
          break;
      }
      settle();
    }
  }

  ScriptOutcome outcome() const {
    ScriptOutcome o = out_;
    o.refused_packets = table_.counters().refused_packets;
    o.protocol_violations = table_.counters().protocol_violations;
    o.connections_left = table_.size();
    return o;
  }

 private:
  std::optional<ConnKey> pick(uint8_t index) {
    if (table_.size() == 0) return std::nullopt;
    keys_.clear();
    // The table's map is ordered by key; rebuild the list from connections we know of.
    for (ConnKey k : known_) {
      if (table_.find(k)) keys_.push_back(k);
    }
    if (keys_.empty()) return std::nullopt;
    return keys_[index % keys_.size()];
  }

  void packet(Reader& r) {
    uint16_t n = r.get<uint16_t>();
    uint8_t cut = r.get<uint8_t>();
    uint8_t writable = r.get<uint8_t>();
    auto bytes = r.take(n);
    std::vector<uint8_t> a(bytes.begin(), bytes.begin() + cut % (bytes.size() + 1));
    std::vector<uint8_t> b(bytes.begin() + static_cast<ptrdiff_t>(a.size()), bytes.end());
    std::vector<uint8_t> w(writable, 0);
    virtio::DescriptorChain chain;
    for (auto* v : {&a, &b}) {
      if (v->empty()) continue;
      chain.readable.emplace_back(v->data(), v->size());
      chain.readable_bytes += v->size();
    }
    if (!w.empty()) {
      chain.writable.emplace_back(w.data(), w.size());
      chain.writable_bytes = w.size();
    }
    Parsed p = parse_packet(chain, kScriptGuestCid);
    check(p.packet.has_value() != p.rejection.has_value());
    if (p.packet) {
      check(p.packet->header.len <= kMaxPayload);
      uint64_t sum = 0;
      for (auto s : p.packet->payload) sum += s.size();
      check(sum == p.packet->header.len);
      table_.on_packet(*p.packet, now_);
      ConnKey key{p.packet->header.src_port, p.packet->header.dst_port};
      known_.push_back(key);
    } else {
      table_.on_refused(*p.rejection);
    }
  }

  void rx(Reader& r) {
    uint16_t room = r.get<uint16_t>();
    uint16_t what = r.get<uint16_t>();
    auto item = table_.next_rx(room);
    if (!item) return;
    if (item->kind == RxItem::Kind::kPacket) return check_header(item->header, 0);
    const Connection* c = table_.find(item->key);
    check(c != nullptr && item->max_bytes > 0 && item->max_bytes <= room && item->max_bytes <= c->peer_credit() &&
          item->max_bytes <= kMaxPayload);
    if (what == 0xffff) {
      table_.host_would_block(item->key);
    } else if (what == 0xfffe) {
      table_.host_failed(item->key);
    } else if (what == 0 || what == 0xfffd) {
      table_.host_eof(item->key, what == 0xfffd);
    } else {
      // The device may read further buffers' worth in the same turn, within data_budget().
      const uint32_t budget = table_.data_budget(item->key), credit = c->peer_credit();
      check(budget >= item->max_bytes && budget <= credit);
      uint32_t n = 1 + what % item->max_bytes;
      check_header(table_.host_data(item->key, n), n);
      check(c->peer_credit() == credit - n && table_.data_budget(item->key) <= credit - n);
    }
  }

  void check_header(const PacketHeader& h, uint32_t len) {
    check(h.src_cid == kHostCid && h.dst_cid == kScriptGuestCid && h.type == kTypeStream && h.len == len);
    check(h.op >= static_cast<uint16_t>(Op::kRequest) && h.op <= static_cast<uint16_t>(Op::kCreditRequest));
    check((h.op == static_cast<uint16_t>(Op::kRw)) == (len > 0));
    if (h.op == static_cast<uint16_t>(Op::kRst)) ++out_.resets_to_guest;
    if (h.op != static_cast<uint16_t>(Op::kRst)) check(h.buf_alloc == table_.limits().buf_alloc);
  }

  // Answers the table's actions as a device would, then checks the table's bounds.
  void settle() {
    for (auto actions = table_.take_actions(); !actions.empty(); actions = table_.take_actions()) {
      for (const HostAction& a : actions) {
        if (a.kind == HostAction::Kind::kConnect) {
          known_.push_back(a.key);
          table_.host_connect_result(a.key, a.port % 2 == 0);
        } else if (a.kind == HostAction::Kind::kClose) {
          check(table_.find(a.key) == nullptr);
          ++out_.closes;
        }
      }
    }
    const Limits& l = table_.limits();
    check(table_.size() <= l.max_connections);
    check(table_.queued_resets() <= l.max_queued_resets);
    for (ConnKey k : known_) {
      const Connection* c = table_.find(k);
      if (c == nullptr) continue;
      // The buffer never holds more guest bytes than the credit the guest was granted.
      check(c->to_host.size() - c->prefix <= l.buf_alloc);
      check(static_cast<uint32_t>(c->rx_cnt - c->fwd_cnt) == c->to_host.size() - c->prefix);
    }
    // Keep the list of keys short: forget the ones that are gone.
    if (known_.size() > 64) {
      std::erase_if(known_, [&](ConnKey k) { return table_.find(k) == nullptr; });
      std::sort(known_.begin(), known_.end());
      known_.erase(std::unique(known_.begin(), known_.end()), known_.end());
    }
  }

  ConnectionTable table_;
  uint64_t now_ = 0;
  std::vector<ConnKey> known_;
  std::vector<ConnKey> keys_;
  ScriptOutcome out_;
};

}  // namespace

ScriptWriter& ScriptWriter::packet(const TxChain& c) {
  std::vector<uint8_t> all;
  for (const auto& r : c.readable) all.insert(all.end(), r.begin(), r.end());
  MOSS_ASSERT(all.size() <= UINT16_MAX && c.writable.size() <= 1 && (c.writable.empty() || c.writable[0] <= 255));
  bytes_.push_back(static_cast<uint8_t>(Tag::kPacket));
  put<uint16_t>(bytes_, static_cast<uint16_t>(all.size()));
  // Cut after the first readable buffer (the header, as Linux lays packets out) if it fits.
  size_t first = c.readable.empty() ? 0 : c.readable[0].size();
  bytes_.push_back(static_cast<uint8_t>(first <= 255 ? first : 0));
  bytes_.push_back(static_cast<uint8_t>(c.writable.empty() ? 0 : c.writable[0]));
  bytes_.insert(bytes_.end(), all.begin(), all.end());
  return *this;
}

ScriptWriter& ScriptWriter::connect(uint32_t port) {
  bytes_.push_back(static_cast<uint8_t>(Tag::kConnect));
  put<uint32_t>(bytes_, port);
  return *this;
}

ScriptWriter& ScriptWriter::readable(uint8_t index) {
  bytes_.push_back(static_cast<uint8_t>(Tag::kReadable));
  bytes_.push_back(index);
  return *this;
}

ScriptWriter& ScriptWriter::rx(uint16_t room, uint16_t read) {
  bytes_.push_back(static_cast<uint8_t>(Tag::kRx));
  put<uint16_t>(bytes_, room);
  put<uint16_t>(bytes_, read);
  return *this;
}

ScriptWriter& ScriptWriter::written(uint8_t index, uint32_t n) {
  bytes_.push_back(static_cast<uint8_t>(Tag::kWritten));
  bytes_.push_back(index);
  put<uint32_t>(bytes_, n);
  return *this;
}

ScriptWriter& ScriptWriter::tick(uint16_t ms) {
  bytes_.push_back(static_cast<uint8_t>(Tag::kTick));
  put<uint16_t>(bytes_, ms);
  return *this;
}

ScriptWriter& ScriptWriter::eof(uint8_t index, bool closed) {
  bytes_.push_back(static_cast<uint8_t>(Tag::kEof));
  bytes_.push_back(index);
  bytes_.push_back(closed ? 1 : 0);
  return *this;
}

ScriptWriter& ScriptWriter::failed(uint8_t index) {
  bytes_.push_back(static_cast<uint8_t>(Tag::kFailed));
  bytes_.push_back(index);
  return *this;
}

ScriptOutcome run_script(std::span<const uint8_t> script) {
  if (script.empty()) return {};
  Runner runner(script[0]);
  Reader r(script.subspan(1));
  runner.run(r);
  return runner.outcome();
}

}  // namespace moss::vsock::testing
