// Seeds for fuzz/fuzz_vsock_packet (script.h): every malformed case of malformed.h sent on an
// open connection, and whole well-formed sessions, so the checked-in corpus holds each case the
// harness acceptance test sends (issue 5, acceptance 5). Each seed is run here the way the
// fuzzer runs it and must do what the case promises (refused, reset, closed); the checked-in
// files must match what is built here. Regenerate after changing a case or the format:
//   MOSS_WRITE_VSOCK_SEEDS=1 build/vsock_fuzz_seeds_test
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "devices/vsock/malformed.h"
#include "devices/vsock/script.h"

namespace moss::vsock::testing {
namespace {

constexpr uint8_t kConfig = 4;  // buf_alloc 4 KiB, one connection.
constexpr uint32_t kServicePort = 5000;  // Even: the script's host connect succeeds.

std::string corpus_dir() { return std::string(MOSS_SOURCE_DIR) + "/fuzz/corpus/fuzz_vsock_packet"; }

Context context() {
  Context ctx;
  ctx.guest_cid = kScriptGuestCid;
  ctx.key = {1025, kServicePort};
  ctx.buf_alloc = script_buf_alloc(kConfig);
  return ctx;
}

TxChain chain_of(const PacketHeader& h, std::string payload = "") {
  TxChain c;
  c.readable.push_back(header_bytes(h));
  if (!payload.empty()) c.readable.emplace_back(payload.begin(), payload.end());
  return c;
}

// The guest opens Context::key; the host accepts.
ScriptWriter opened(const Context& ctx) {
  ScriptWriter w(kConfig);
  w.packet(chain_of(guest_header(ctx, Op::kRequest))).rx(4096);
  return w;
}

std::vector<uint8_t> malformed_seed(const MalformedCase& mc) {
  Context ctx = context();
  ScriptWriter w = opened(ctx);
  for (const TxChain& c : mc.build(ctx)) w.packet(c);
  w.rx(4096).rx(4096);
  return w.bytes();
}

struct Seed {
  std::string name;
  std::vector<uint8_t> bytes;
};

std::vector<Seed> sessions() {
  std::vector<Seed> out;
  Context ctx = context();
  {
    ScriptWriter w = opened(ctx);
    w.packet(chain_of(guest_header(ctx, Op::kRw, 5), "hello")).written(0, 5);
    w.readable(0).rx(4096, 99).rx(4096, 0xffff);
    PacketHeader credit = guest_header(ctx, Op::kCreditUpdate);
    credit.fwd_cnt = 100;
    w.packet(chain_of(credit)).packet(chain_of(guest_header(ctx, Op::kCreditRequest))).rx(4096);
    w.packet(chain_of(guest_header(ctx, Op::kShutdown, 0, kShutdownSend))).eof(0, false).rx(4096).rx(4096);
    out.push_back({"session-guest-initiated", w.bytes()});
  }
  {
    Context h = ctx;
    h.key = {52, kFirstHostPort};
    ScriptWriter w(kConfig);
    w.connect(52).rx(4096).packet(chain_of(guest_header(h, Op::kResponse))).written(0, 14);
    w.readable(0).rx(4096, 4000).rx(4096, 4000).rx(4096).rx(4096);  // Two reads, then EOF: SHUTDOWN.
    w.packet(chain_of(guest_header(h, Op::kRw, 3), "abc")).written(0, 1).written(0, 2);
    w.packet(chain_of(guest_header(h, Op::kShutdown, 0, kShutdownBoth))).rx(4096);
    out.push_back({"session-host-initiated", w.bytes()});
  }
  {
    ScriptWriter w(kConfig);
    w.connect(52).rx(4096).tick(2000).rx(4096);
    out.push_back({"connect-timeout", w.bytes()});
  }
  {
    ScriptWriter w = opened(ctx);
    PacketHeader other = guest_header(ctx, Op::kRequest);
    other.src_port = 1026;
    w.packet(chain_of(other)).rx(4096);  // Over the limit of one connection: RST.
    PacketHeader odd = guest_header(ctx, Op::kRequest);
    odd.dst_port = 5001;  // Odd: the host refuses.
    w.failed(0).rx(4096).packet(chain_of(odd)).rx(4096);
    out.push_back({"limits-and-refusals", w.bytes()});
  }
  return out;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void check_or_write(const std::string& name, const std::vector<uint8_t>& bytes) {
  std::string path = corpus_dir() + "/" + name;
  if (std::getenv("MOSS_WRITE_VSOCK_SEEDS") != nullptr) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  EXPECT_EQ(read_file(path), bytes) << path << " is missing or stale: run MOSS_WRITE_VSOCK_SEEDS=1 vsock_fuzz_seeds_test";
}

TEST(VsockFuzzSeeds, EveryMalformedCaseIsRefusedAndInTheCorpus) {
  for (const MalformedCase& mc : malformed_cases()) {
    SCOPED_TRACE(mc.name);
    std::vector<uint8_t> seed = malformed_seed(mc);
    ScriptOutcome o = run_script(seed);
    if (mc.refusal) {
      EXPECT_EQ(o.refused_packets, 1u);
    } else {
      EXPECT_EQ(o.refused_packets, 0u);
      EXPECT_EQ(o.protocol_violations, 1u);
    }
    EXPECT_EQ(o.resets_to_guest, mc.answered ? 1u : 0u);
    EXPECT_EQ(o.connections_left, mc.closes ? 0u : 1u);
    check_or_write(std::string("malformed-") + mc.name, seed);
  }
}

TEST(VsockFuzzSeeds, WellFormedSessionsRunAndAreInTheCorpus) {
  for (const Seed& s : sessions()) {
    SCOPED_TRACE(s.name);
    ScriptOutcome o = run_script(s.bytes);
    EXPECT_EQ(o.refused_packets, 0u);
    check_or_write(s.name, s.bytes);
  }
  // Spot checks of what the sessions do.
  auto all = sessions();
  EXPECT_EQ(run_script(all[0].bytes).connections_left, 0u) << "ended by SHUTDOWN + EOF";
  EXPECT_EQ(run_script(all[2].bytes).resets_to_guest, 1u) << "the time-out resets the REQUEST";
  EXPECT_EQ(run_script(all[3].bytes).resets_to_guest, 3u);
}

}  // namespace
}  // namespace moss::vsock::testing
