// The agent protocol codec: every message both ways, the incremental decoder, and every
// malformed case the decoder must refuse. MOSS_WRITE_AGENT_SEEDS=DIR also writes the frames
// used here as fuzz seeds (fuzz/corpus/fuzz_agent_protocol/).
#include "guest/agent/protocol.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace moss::agent {
namespace {

// -------------------------------------------------------------- helpers --

void le16(std::string* s, uint16_t v) {
  s->push_back(static_cast<char>(v));
  s->push_back(static_cast<char>(v >> 8));
}
void le32(std::string* s, uint32_t v) {
  le16(s, static_cast<uint16_t>(v));
  le16(s, static_cast<uint16_t>(v >> 16));
}
std::string raw(uint8_t type, const std::string& payload, uint32_t len_override = 0xffffffff) {
  std::string s;
  le32(&s, len_override == 0xffffffff ? static_cast<uint32_t>(payload.size()) : len_override);
  s.push_back(static_cast<char>(type));
  s.append(3, '\0');
  return s + payload;
}
std::string str(const std::string& v) {
  std::string s;
  le32(&s, static_cast<uint32_t>(v.size()));
  return s + v;
}
// An EXEC payload with the given header fields and strings.
std::string exec_payload(uint8_t mode, uint16_t rows, uint16_t cols, const std::string& cwd,
                         const std::vector<std::string>& argv, const std::vector<std::string>& env,
                         uint32_t argc_override = 0xffffffff, uint32_t envc_override = 0xffffffff) {
  std::string p;
  p.push_back(static_cast<char>(mode));
  p.push_back(0);
  le16(&p, rows);
  le16(&p, cols);
  le16(&p, 0);
  le32(&p, argc_override == 0xffffffff ? static_cast<uint32_t>(argv.size()) : argc_override);
  le32(&p, envc_override == 0xffffffff ? static_cast<uint32_t>(env.size()) : envc_override);
  p += str(cwd);
  for (const auto& a : argv) p += str(a);
  for (const auto& e : env) p += str(e);
  return p;
}

const char* seed_dir() { return std::getenv("MOSS_WRITE_AGENT_SEEDS"); }

// Fuzz seed format (fuzz/fuzz_agent_protocol.cc): byte 0 = direction (bit 0: to host) and
// chunk size (bits 1-7), then the stream.
void write_seed(const std::string& name, Direction d, const std::string& bytes) {
  const char* dir = seed_dir();
  if (dir == nullptr) return;
  std::ofstream f(std::string(dir) + "/" + name, std::ios::binary);
  char head = static_cast<char>((d == Direction::kToHost ? 1 : 0) | (7 << 1));
  f << head << bytes;
}

Frame decode_one(Direction d, const std::string& bytes) {
  Frame f;
  size_t used = 0;
  Error err;
  DecodeStatus s = decode_frame(d, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &f, &used, &err);
  EXPECT_EQ(s, DecodeStatus::kFrame) << err.message;
  EXPECT_EQ(used, bytes.size());
  return f;
}

// The decoder's error for `bytes`, or "" if it decoded a frame or wants more.
std::string decode_error(Direction d, const std::string& bytes) {
  Frame f;
  size_t used = 0;
  Error err;
  DecodeStatus s = decode_frame(d, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &f, &used, &err);
  if (s != DecodeStatus::kError) return "";
  EXPECT_FALSE(err.message.empty());
  return err.message;
}

void expect_round_trip(Direction d, const Frame& f, const std::string& seed_name) {
  std::string bytes;
  ASSERT_TRUE(encode(d, f, &bytes).ok()) << type_name(f.type);
  EXPECT_EQ(decode_one(d, bytes), f) << type_name(f.type);
  // The other direction refuses it unless the type travels both ways.
  Direction other = d == Direction::kToAgent ? Direction::kToHost : Direction::kToAgent;
  bool both = f.type == MsgType::kHello || f.type == MsgType::kCredit || f.type == MsgType::kStreamClosed;
  if (!both) {
    EXPECT_NE(decode_error(other, bytes), "") << type_name(f.type);
  }
  write_seed(seed_name, d, bytes);
}

Frame make(MsgType t) {
  Frame f;
  f.type = t;
  return f;
}

ExecRequest sample_exec() {
  ExecRequest e;
  e.argv = {"sh", "-c", "echo \"$X\"; exit 7", std::string("\x01\xff binary", 9)};
  e.env = {"X=hello", "EMPTY=", "K=a=b"};
  e.cwd = "/tmp";
  return e;
}

// ----------------------------------------------------------- round trips --

TEST(AgentProtocol, EveryHostMessageRoundTrips) {
  Frame hello = make(MsgType::kHello);
  hello.version_min = 1;
  hello.version_max = 3;
  expect_round_trip(Direction::kToAgent, hello, "hello-to-agent");

  Frame exec = make(MsgType::kExec);
  exec.exec = sample_exec();
  expect_round_trip(Direction::kToAgent, exec, "exec-pipes");
  exec.exec.mode = Mode::kPty;
  exec.exec.rows = 24;
  exec.exec.cols = 80;
  exec.exec.env.clear();
  exec.exec.cwd.clear();
  expect_round_trip(Direction::kToAgent, exec, "exec-pty");

  Frame in = make(MsgType::kStdin);
  in.data = std::string("\0\1\2binary\n\xff", 12);
  expect_round_trip(Direction::kToAgent, in, "stdin");
  in.data.assign(kMaxDataPayload, 'x');
  expect_round_trip(Direction::kToAgent, in, "stdin-max");

  expect_round_trip(Direction::kToAgent, make(MsgType::kStdinEof), "stdin-eof");

  Frame sig = make(MsgType::kSignal);
  sig.number = 2;
  expect_round_trip(Direction::kToAgent, sig, "signal");
  sig.number = 64;
  expect_round_trip(Direction::kToAgent, sig, "signal-64");

  Frame ws = make(MsgType::kWinsize);
  ws.rows = 50;
  ws.cols = 132;
  expect_round_trip(Direction::kToAgent, ws, "winsize");

  Frame sd = make(MsgType::kShutdown);
  sd.number = 255;
  expect_round_trip(Direction::kToAgent, sd, "shutdown");

  Frame cr = make(MsgType::kCredit);
  cr.stream = Stream::kStdout;
  cr.number = kMaxWindow;
  expect_round_trip(Direction::kToAgent, cr, "credit-stdout");
  cr.stream = Stream::kStderr;
  cr.number = 1;
  expect_round_trip(Direction::kToAgent, cr, "credit-stderr");

  Frame sc = make(MsgType::kStreamClosed);
  sc.stream = Stream::kStdout;
  expect_round_trip(Direction::kToAgent, sc, "closed-stdout");
  sc.stream = Stream::kStderr;
  expect_round_trip(Direction::kToAgent, sc, "closed-stderr");

  Frame gen = make(MsgType::kGeneration);
  gen.generation = 1;
  gen.data.assign(kMinEntropyBytes, '\x5a');
  expect_round_trip(Direction::kToAgent, gen, "generation-no-clock");
  gen.generation = 0xfedcba9876543210ull;
  gen.realtime_ns = 1765000000123456789;
  gen.data.assign(kMaxEntropyBytes, '\0');
  gen.data[7] = '\xff';
  expect_round_trip(Direction::kToAgent, gen, "generation-clock");
}

TEST(AgentProtocol, EveryAgentMessageRoundTrips) {
  Frame hello = make(MsgType::kHello);
  hello.version_min = hello.version_max = 1;
  expect_round_trip(Direction::kToHost, hello, "hello-to-host");

  Frame started = make(MsgType::kStarted);
  started.number = 42;
  expect_round_trip(Direction::kToHost, started, "started");

  Frame out = make(MsgType::kStdout);
  out.data = "hello\n";
  expect_round_trip(Direction::kToHost, out, "stdout");
  Frame err = make(MsgType::kStderr);
  err.data = std::string("\0err", 4);
  expect_round_trip(Direction::kToHost, err, "stderr");

  Frame cr = make(MsgType::kCredit);
  cr.stream = Stream::kStdin;
  cr.number = 65536;
  expect_round_trip(Direction::kToHost, cr, "credit-stdin");
  Frame sc = make(MsgType::kStreamClosed);
  sc.stream = Stream::kStdin;
  expect_round_trip(Direction::kToHost, sc, "closed-stdin");

  Frame ex = make(MsgType::kExit);
  ex.exit.code = 7;
  expect_round_trip(Direction::kToHost, ex, "exit-7");
  ex.exit.code = 255;
  expect_round_trip(Direction::kToHost, ex, "exit-255");
  ex.exit = ExitInfo{true, true, 11};
  expect_round_trip(Direction::kToHost, ex, "exit-sigsegv-core");
  EXPECT_EQ(ex.exit.shell_status(), 139);

  Frame e = make(MsgType::kError);
  e.error = ErrorCode::kExecFailed;
  e.data = "cannot execute nosuch: No such file or directory";
  expect_round_trip(Direction::kToHost, e, "error-exec");
  e.error = ErrorCode::kProtocol;
  e.data.assign(kMaxErrorBytes, 'e');
  expect_round_trip(Direction::kToHost, e, "error-max");

  Frame ack = make(MsgType::kGenerationAck);
  ack.generation = 0x0102030405060708ull;
  expect_round_trip(Direction::kToHost, ack, "generation-ack");
}

TEST(AgentProtocol, GenerationLayoutIsLittleEndianAndEntropyLast) {
  Frame gen = make(MsgType::kGeneration);
  gen.generation = 0x0102030405060708ull;
  gen.realtime_ns = 0x1112131415161718;
  gen.data.assign(kMinEntropyBytes, 'e');
  std::string bytes;
  ASSERT_TRUE(encode(Direction::kToAgent, gen, &bytes).ok());
  std::string want = raw(0x0a, std::string("\x08\x07\x06\x05\x04\x03\x02\x01\x18\x17\x16\x15\x14\x13\x12\x11", 16) +
                                   std::string(kMinEntropyBytes, 'e'));
  EXPECT_EQ(bytes, want);
}

TEST(AgentProtocol, ShorthandsEncodeTheSameBytes) {
  std::string a, b;
  encode_data(MsgType::kStdout, "abc", 3, &a);
  Frame f = make(MsgType::kStdout);
  f.data = "abc";
  ASSERT_TRUE(encode(Direction::kToHost, f, &b).ok());
  EXPECT_EQ(a, b);
  a.clear();
  b.clear();
  encode_simple(MsgType::kSignal, 15, &a);
  f = make(MsgType::kSignal);
  f.number = 15;
  ASSERT_TRUE(encode(Direction::kToAgent, f, &b).ok());
  EXPECT_EQ(a, b);
  a.clear();
  encode_credit(Stream::kStdin, 9, Direction::kToHost, &a);
  EXPECT_EQ(decode_one(Direction::kToHost, a).number, 9u);
  a.clear();
  encode_stream_closed(Stream::kStderr, Direction::kToAgent, &a);
  EXPECT_EQ(decode_one(Direction::kToAgent, a).stream, Stream::kStderr);
}

// ---------------------------------------------------------- incremental --

TEST(AgentProtocol, DecoderYieldsWholeFramesFedOneByteAtATime) {
  std::string stream;
  Frame hello = make(MsgType::kHello);
  hello.version_min = hello.version_max = 1;
  Frame exec = make(MsgType::kExec);
  exec.exec = sample_exec();
  Frame in = make(MsgType::kStdin);
  in.data = std::string(1000, 'z');
  std::vector<Frame> sent = {hello, exec, in, make(MsgType::kStdinEof)};
  for (const Frame& f : sent) ASSERT_TRUE(encode(Direction::kToAgent, f, &stream).ok());
  write_seed("session-to-agent", Direction::kToAgent, stream);

  Decoder d(Direction::kToAgent);
  std::vector<Frame> got;
  for (char c : stream) {
    d.feed(&c, 1);
    Frame f;
    DecodeStatus s;
    while ((s = d.next(&f)) == DecodeStatus::kFrame) got.push_back(f);
    ASSERT_EQ(s, DecodeStatus::kNeedMore) << (d.error() ? d.error()->message : "");
  }
  EXPECT_EQ(got, sent);
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(AgentProtocol, DecoderTakesManyFramesFromOneFeed) {
  std::string stream;
  for (int i = 1; i <= 100; ++i) encode_data(MsgType::kStdout, std::string(static_cast<size_t>(i), 'a').data(), i, &stream);
  Frame ex = make(MsgType::kExit);
  ASSERT_TRUE(encode(Direction::kToHost, ex, &stream).ok());
  write_seed("session-to-host", Direction::kToHost, stream);
  Decoder d(Direction::kToHost);
  d.feed(stream.data(), stream.size());
  Frame f;
  size_t total = 0;
  int frames = 0;
  while (d.next(&f) == DecodeStatus::kFrame) {
    ++frames;
    total += f.data.size();
  }
  EXPECT_EQ(frames, 101);
  EXPECT_EQ(total, 5050u);
  EXPECT_EQ(f.type, MsgType::kExit);
}

TEST(AgentProtocol, DecoderErrorIsSticky) {
  Decoder d(Direction::kToAgent);
  std::string bad = raw(0x77, "");
  d.feed(bad.data(), bad.size());
  Frame f;
  EXPECT_EQ(d.next(&f), DecodeStatus::kError);
  std::string good;
  encode_simple(MsgType::kSignal, 2, &good);
  d.feed(good.data(), good.size());
  EXPECT_EQ(d.next(&f), DecodeStatus::kError);
  ASSERT_NE(d.error(), nullptr);
  EXPECT_EQ(d.error()->message, "unknown message type");
}

// A header that can never lead to a valid frame is refused before its payload arrives, so a
// peer cannot make us wait for (or buffer) a huge one.
TEST(AgentProtocol, BadHeaderIsRefusedBeforeThePayload) {
  std::string h = raw(static_cast<uint8_t>(MsgType::kExec), "", kMaxPayload + 1);
  EXPECT_EQ(decode_error(Direction::kToAgent, h.substr(0, 4)), "frame larger than 1 MiB");
  EXPECT_EQ(decode_error(Direction::kToAgent, h), "payload length wrong for the message type");
  h = raw(static_cast<uint8_t>(MsgType::kStdin), "", kMaxDataPayload + 1);
  EXPECT_EQ(decode_error(Direction::kToAgent, h), "payload length wrong for the message type");
  h = raw(static_cast<uint8_t>(MsgType::kSignal), "", 5);
  EXPECT_EQ(decode_error(Direction::kToAgent, h.substr(0, 5)), "payload length wrong for the message type");
  EXPECT_EQ(decode_error(Direction::kToAgent, std::string("\0\0\0\0\x04\x01", 6)), "reserved header bytes not zero");
  // A valid header and part of the payload: just more to come.
  std::string sig;
  encode_simple(MsgType::kSignal, 2, &sig);
  EXPECT_EQ(decode_error(Direction::kToAgent, sig.substr(0, 10)), "");
}

// ------------------------------------------------------------- malformed --

struct Bad {
  const char* name;
  Direction dir;
  std::string bytes;
  const char* error;
};

std::vector<Bad> malformed_frames() {
  const Direction A = Direction::kToAgent, H = Direction::kToHost;
  auto u8 = [](uint8_t t) { return t; };
  auto p32 = [](uint32_t v) {
    std::string s;
    le32(&s, v);
    return s;
  };
  std::string hello;
  le32(&hello, kHelloMagic);
  le16(&hello, 1);
  le16(&hello, 1);
  std::string bad_magic = hello;
  bad_magic[0] = 'X';
  std::string bad_range;
  le32(&bad_range, kHelloMagic);
  le16(&bad_range, 2);
  le16(&bad_range, 1);
  std::string zero_version;
  le32(&zero_version, kHelloMagic);
  le16(&zero_version, 0);
  le16(&zero_version, 0);
  const uint8_t kExec = u8(0x02);
  std::vector<std::string> argv = {"ls"};
  std::string exec_reserved = exec_payload(0, 0, 0, "", argv, {});
  exec_reserved[1] = 1;
  std::string exec_reserved2 = exec_payload(0, 0, 0, "", argv, {});
  exec_reserved2[6] = 1;
  std::string truncated = exec_payload(0, 0, 0, "/", {"abc"}, {});
  truncated.pop_back();
  std::string str_len_big = exec_payload(0, 0, 0, "", argv, {});
  // argv[0]'s length says more than the payload holds.
  str_len_big[20 + 1] = static_cast<char>(0xff);
  std::string exit_flags;
  exit_flags += '\2';
  exit_flags += '\0';
  le16(&exit_flags, 0);
  le32(&exit_flags, 0);
  auto exit_p = [&](uint8_t sig, uint8_t core, uint16_t z, uint32_t code) {
    std::string s;
    s += static_cast<char>(sig);
    s += static_cast<char>(core);
    le16(&s, z);
    le32(&s, code);
    return s;
  };
  auto stream_p = [&](uint8_t st, uint8_t z, uint32_t n, bool with_n) {
    std::string s;
    s += static_cast<char>(st);
    s += static_cast<char>(z);
    le16(&s, 0);
    if (with_n) le32(&s, n);
    return s;
  };
  auto gen_p = [&](uint64_t g, int64_t ns, size_t entropy) {
    std::string s;
    le32(&s, static_cast<uint32_t>(g));
    le32(&s, static_cast<uint32_t>(g >> 32));
    le32(&s, static_cast<uint32_t>(static_cast<uint64_t>(ns)));
    le32(&s, static_cast<uint32_t>(static_cast<uint64_t>(ns) >> 32));
    return s + std::string(entropy, 'r');
  };
  auto ack_p = [&](uint64_t g) {
    std::string s;
    le32(&s, static_cast<uint32_t>(g));
    le32(&s, static_cast<uint32_t>(g >> 32));
    return s;
  };
  std::string big_arg(kMaxStringBytes + 1, 'a');
  std::string big_cwd(kMaxCwdBytes + 1, 'c');
  std::vector<std::string> many_env(kMaxEnvc + 1, "A=1");
  return {
      {"unknown-type", A, raw(0x7f, ""), "unknown message type"},
      {"type-zero", H, raw(0x00, ""), "unknown message type"},
      {"exec-to-host", H, raw(kExec, exec_payload(0, 0, 0, "", argv, {})), "a message the host never receives"},
      {"stdout-to-agent", A, raw(0x11, "x"), "a message the agent never receives"},
      {"exit-to-agent", A, raw(0x13, exit_p(0, 0, 0, 0)), "a message the agent never receives"},
      {"signal-to-host", H, raw(0x05, p32(2)), "a message the host never receives"},
      {"hello-short", A, raw(0x01, hello.substr(0, 6)), "payload length wrong for the message type"},
      {"hello-magic", A, raw(0x01, bad_magic), "hello: wrong magic number (not a moss agent peer)"},
      {"hello-range", A, raw(0x01, bad_range), "hello: bad version range"},
      {"hello-zero", H, raw(0x01, zero_version), "hello: bad version range"},
      {"stdin-empty", A, raw(0x03, ""), "empty data frame"},
      {"stdout-too-big", H, raw(0x11, std::string(kMaxDataPayload + 1, 'x')), "payload length wrong for the message type"},
      {"stdin-eof-payload", A, raw(0x04, "x"), "payload length wrong for the message type"},
      {"signal-zero", A, raw(0x05, p32(0)), "signal: number out of range 1-64"},
      {"signal-65", A, raw(0x05, p32(65)), "signal: number out of range 1-64"},
      {"winsize-long", A, raw(0x06, p32(0) + "x"), "payload length wrong for the message type"},
      {"shutdown-256", A, raw(0x07, p32(256)), "shutdown: status above 255"},
      {"credit-zero", A, raw(0x08, stream_p(1, 0, 0, true)), "credit: amount out of range"},
      {"credit-huge", A, raw(0x08, stream_p(1, 0, kMaxWindow + 1, true)), "credit: amount out of range"},
      {"credit-stdin-to-agent", A, raw(0x08, stream_p(0, 0, 1, true)), "credit: wrong stream for this direction"},
      {"credit-stdout-to-host", H, raw(0x08, stream_p(1, 0, 1, true)), "credit: wrong stream for this direction"},
      {"credit-stream-3", A, raw(0x08, stream_p(3, 0, 1, true)), "credit/stream-closed: unknown stream"},
      {"credit-reserved", A, raw(0x08, stream_p(1, 9, 1, true)), "credit/stream-closed: reserved bytes not zero"},
      {"closed-stdin-to-agent", A, raw(0x09, stream_p(0, 0, 0, false)), "stream-closed: wrong stream for this direction"},
      {"closed-stderr-to-host", H, raw(0x09, stream_p(2, 0, 0, false)), "stream-closed: wrong stream for this direction"},
      {"started-zero", H, raw(0x10, p32(0)), "started: bad pid"},
      {"started-negative", H, raw(0x10, p32(0x80000000u)), "started: bad pid"},
      {"exit-flags", H, raw(0x13, exit_flags), "exit: flag byte not 0 or 1"},
      {"exit-reserved", H, raw(0x13, exit_p(0, 0, 1, 0)), "exit: reserved bytes not zero"},
      {"exit-256", H, raw(0x13, exit_p(0, 0, 0, 256)), "exit: status above 255"},
      {"exit-core-no-signal", H, raw(0x13, exit_p(0, 1, 0, 0)), "exit: core dumped without a signal"},
      {"exit-signal-0", H, raw(0x13, exit_p(1, 0, 0, 0)), "exit: signal out of range 1-64"},
      {"exit-signal-65", H, raw(0x13, exit_p(1, 0, 0, 65)), "exit: signal out of range 1-64"},
      {"error-code-0", H, raw(0x14, p32(0) + "x"), "error: unknown code"},
      {"error-code-5", H, raw(0x14, p32(5) + "x"), "error: unknown code"},
      {"error-empty", H, raw(0x14, p32(1)), "error: message empty or longer than 1024 bytes"},
      {"error-short", H, raw(0x14, "ab"), "truncated payload"},
      {"error-control", H, raw(0x14, p32(1) + "bad\x1b[2J"), "error: control character in the message"},
      {"error-newline", H, raw(0x14, p32(1) + "two\nlines"), "error: control character in the message"},
      {"error-long", H, raw(0x14, p32(1) + std::string(kMaxErrorBytes + 1, 'e')), "payload length wrong for the message type"},
      {"exec-mode", A, raw(kExec, exec_payload(2, 0, 0, "", argv, {})), "exec request: unknown mode"},
      {"exec-reserved", A, raw(kExec, exec_reserved), "exec request: reserved bytes not zero"},
      {"exec-reserved2", A, raw(kExec, exec_reserved2), "exec request: reserved bytes not zero"},
      {"exec-pipes-winsize", A, raw(kExec, exec_payload(0, 24, 80, "", argv, {})), "exec request: a window size in pipes mode"},
      {"exec-argc-0", A, raw(kExec, exec_payload(0, 0, 0, "", {}, {})), "exec request: empty argv"},
      {"exec-argc-huge", A, raw(kExec, exec_payload(0, 0, 0, "", argv, {}, kMaxArgc + 1)), "exec request: too many arguments"},
      {"exec-envc-huge", A, raw(kExec, exec_payload(0, 0, 0, "", argv, {}, 0xffffffff, 0xffffffffu - 1)), "exec request: too many environment entries"},
      {"exec-argc-beyond-payload", A, raw(kExec, exec_payload(0, 0, 0, "", argv, {}, kMaxArgc)), "exec request: truncated"},
      {"exec-truncated", A, raw(kExec, truncated), "exec request: truncated"},
      {"exec-string-beyond-payload", A, raw(kExec, str_len_big), "exec request: truncated"},
      {"exec-trailing", A, raw(kExec, exec_payload(0, 0, 0, "", argv, {}) + "x"), "exec request: bytes after the last string"},
      {"exec-argv0-empty", A, raw(kExec, exec_payload(0, 0, 0, "", {""}, {})), "exec request: empty program name (argv[0])"},
      {"exec-arg-nul", A, raw(kExec, exec_payload(0, 0, 0, "", {"ls", std::string("a\0b", 3)}, {})), "exec request: NUL byte in an argument"},
      {"exec-env-nul", A, raw(kExec, exec_payload(0, 0, 0, "", argv, {std::string("A=\0", 3)})), "exec request: NUL byte in an environment entry"},
      {"exec-cwd-nul", A, raw(kExec, exec_payload(0, 0, 0, std::string("/\0", 2), argv, {})), "exec request: NUL byte in the working directory"},
      {"exec-env-no-eq", A, raw(kExec, exec_payload(0, 0, 0, "", argv, {"NOEQUALS"})), "exec request: environment entry not of the form KEY=VALUE"},
      {"exec-env-empty-key", A, raw(kExec, exec_payload(0, 0, 0, "", argv, {"=v"})), "exec request: environment entry not of the form KEY=VALUE"},
      {"exec-arg-too-long", A, raw(kExec, exec_payload(0, 0, 0, "", {"ls", big_arg}, {})), "exec request: argument too long"},
      {"exec-env-too-long", A, raw(kExec, exec_payload(0, 0, 0, "", argv, {"A=" + big_arg})), "exec request: environment entry too long"},
      {"exec-cwd-too-long", A, raw(kExec, exec_payload(0, 0, 0, big_cwd, argv, {})), "exec request: working directory too long"},
      {"generation-to-host", H, raw(0x0a, gen_p(1, 0, 32)), "a message the host never receives"},
      {"generation-ack-to-agent", A, raw(0x15, ack_p(1)), "a message the agent never receives"},
      {"generation-zero", A, raw(0x0a, gen_p(0, 0, 32)), "generation: number 0 (generations start at 1)"},
      {"generation-negative-clock", A, raw(0x0a, gen_p(1, -1, 32)), "generation: negative realtime"},
      {"generation-entropy-short", A, raw(0x0a, gen_p(1, 0, 31)), "generation: entropy not 32-512 bytes"},
      {"generation-entropy-none", A, raw(0x0a, gen_p(1, 0, 0)), "generation: entropy not 32-512 bytes"},
      {"generation-entropy-long", A, raw(0x0a, gen_p(1, 0, 513)), "payload length wrong for the message type"},
      {"generation-truncated", A, raw(0x0a, gen_p(1, 0, 0).substr(0, 12)), "truncated payload"},
      {"generation-ack-zero", H, raw(0x15, ack_p(0)), "generation: number 0 (generations start at 1)"},
      {"generation-ack-short", H, raw(0x15, ack_p(1).substr(0, 4)), "payload length wrong for the message type"},
      {"exec-too-many-env", A, raw(kExec, exec_payload(0, 0, 0, "", argv, many_env)), "exec request: too many environment entries"},
  };
}

TEST(AgentProtocol, EveryMalformedFrameIsRefusedWithItsReason) {
  for (const Bad& b : malformed_frames()) {
    EXPECT_EQ(decode_error(b.dir, b.bytes), b.error) << b.name;
    // Fed through the incremental decoder in pieces, the verdict is the same.
    Decoder d(b.dir);
    Frame f;
    DecodeStatus s = DecodeStatus::kNeedMore;
    for (size_t i = 0; i < b.bytes.size() && s == DecodeStatus::kNeedMore; i += 3) {
      d.feed(b.bytes.data() + i, std::min<size_t>(3, b.bytes.size() - i));
      s = d.next(&f);
    }
    EXPECT_EQ(s, DecodeStatus::kError) << b.name;
    if (b.bytes.size() < 4096) write_seed("bad-" + std::string(b.name), b.dir, b.bytes);
  }
}

TEST(AgentProtocol, EncoderRefusesWhatTheDecoderWouldRefuse) {
  std::string out;
  Frame f = make(MsgType::kExec);
  EXPECT_EQ(encode(Direction::kToAgent, f, &out).error().message, "exec request: empty argv");
  f.exec.argv = {"ls"};
  f.exec.env = {"novalue"};
  EXPECT_EQ(encode(Direction::kToAgent, f, &out).error().message, "exec request: environment entry not of the form KEY=VALUE");
  f.exec.env.clear();
  f.exec.argv.assign(kMaxArgc + 1, "a");
  EXPECT_EQ(encode(Direction::kToAgent, f, &out).error().message, "exec request: too many arguments");
  f.exec.argv.assign(16, std::string(100000, 'a'));  // 1.6 MB: each fits, the whole does not.
  EXPECT_EQ(encode(Direction::kToAgent, f, &out).error().message, "exec request: arguments and environment larger than 1 MiB");
  Frame s = make(MsgType::kStdout);
  EXPECT_EQ(encode(Direction::kToAgent, s, &out).error().message, "a message the agent never receives");
  EXPECT_EQ(encode(Direction::kToHost, s, &out).error().message, "empty data frame");
  Frame sig = make(MsgType::kSignal);
  sig.number = 0;
  EXPECT_FALSE(encode(Direction::kToAgent, sig, &out).ok());
  EXPECT_TRUE(out.empty());
}

TEST(AgentProtocol, LargestExecRequestRoundTrips) {
  Frame f = make(MsgType::kExec);
  // Just under the 1 MiB frame: 7 arguments of 128 KiB, and the rest in environment entries.
  f.exec.argv.assign(7, std::string(kMaxStringBytes, 'a'));
  size_t used = 16 + 4 + 7 * (4 + kMaxStringBytes);
  while (used + 4 + 1000 <= kMaxPayload) {
    f.exec.env.push_back("K=" + std::string(998, 'v'));
    used += 4 + 1000;
  }
  std::string bytes;
  ASSERT_TRUE(encode(Direction::kToAgent, f, &bytes).ok());
  EXPECT_LE(bytes.size(), kHeaderSize + kMaxPayload);
  EXPECT_EQ(decode_one(Direction::kToAgent, bytes), f);
}

}  // namespace
}  // namespace moss::agent
