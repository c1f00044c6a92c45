// The moss agent protocol codec (see protocol.h). Pure: no I/O, no exceptions.
#include "guest/agent/protocol.h"

#include <cstdlib>
#include <cstring>

namespace moss::agent {
namespace {

// ------------------------------------------------------------ byte helpers --

void put_u8(std::string* out, uint8_t v) { out->push_back(static_cast<char>(v)); }
void put_u16(std::string* out, uint16_t v) {
  put_u8(out, static_cast<uint8_t>(v));
  put_u8(out, static_cast<uint8_t>(v >> 8));
}
void put_u32(std::string* out, uint32_t v) {
  put_u16(out, static_cast<uint16_t>(v));
  put_u16(out, static_cast<uint16_t>(v >> 16));
}
void put_u64(std::string* out, uint64_t v) {
  put_u32(out, static_cast<uint32_t>(v));
  put_u32(out, static_cast<uint32_t>(v >> 32));
}
void put_string(std::string* out, std::string_view s) {
  put_u32(out, static_cast<uint32_t>(s.size()));
  out->append(s);
}

// A bounds-checked reader over one payload: every get fails (and stays failed) rather than
// read past the end.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool u8(uint8_t* v) {
    if (n_ - pos_ < 1) return fail();
    *v = p_[pos_++];
    return true;
  }
  bool u16(uint16_t* v) {
    if (n_ - pos_ < 2) return fail();
    *v = static_cast<uint16_t>(p_[pos_] | p_[pos_ + 1] << 8);
    pos_ += 2;
    return true;
  }
  bool u64(uint64_t* v) {
    uint32_t lo = 0, hi = 0;
    if (!u32(&lo) || !u32(&hi)) return false;
    *v = static_cast<uint64_t>(hi) << 32 | lo;
    return true;
  }
  bool u32(uint32_t* v) {
    if (n_ - pos_ < 4) return fail();
    *v = static_cast<uint32_t>(p_[pos_]) | static_cast<uint32_t>(p_[pos_ + 1]) << 8 |
         static_cast<uint32_t>(p_[pos_ + 2]) << 16 | static_cast<uint32_t>(p_[pos_ + 3]) << 24;
    pos_ += 4;
    return true;
  }
  // A u32-length-prefixed string of at most `max` bytes.
  bool string(std::string* s, uint32_t max, bool* too_long) {
    uint32_t len;
    if (!u32(&len)) return false;
    if (len > max) {
      *too_long = true;
      return fail();
    }
    if (n_ - pos_ < len) return fail();
    s->assign(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return true;
  }
  bool rest(std::string* s) {
    s->assign(reinterpret_cast<const char*>(p_ + pos_), n_ - pos_);
    pos_ = n_;
    return ok_;
  }
  size_t left() const { return n_ - pos_; }
  bool ok() const { return ok_; }

 private:
  bool fail() {
    ok_ = false;
    pos_ = n_;
    return false;
  }
  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  bool ok_ = true;
};

uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

// ----------------------------------------------------------------- checks --

bool valid_type(uint8_t t) {
  switch (static_cast<MsgType>(t)) {
    case MsgType::kHello:
    case MsgType::kExec:
    case MsgType::kStdin:
    case MsgType::kStdinEof:
    case MsgType::kSignal:
    case MsgType::kWinsize:
    case MsgType::kShutdown:
    case MsgType::kCredit:
    case MsgType::kStreamClosed:
    case MsgType::kGeneration:
    case MsgType::kStarted:
    case MsgType::kStdout:
    case MsgType::kStderr:
    case MsgType::kExit:
    case MsgType::kError:
    case MsgType::kGenerationAck:
      return true;
  }
  return false;
}

// Whether a frame of type t may travel in direction d.
bool allowed(Direction d, MsgType t) {
  switch (t) {
    case MsgType::kHello:
    case MsgType::kCredit:
    case MsgType::kStreamClosed:
      return true;
    case MsgType::kExec:
    case MsgType::kStdin:
    case MsgType::kStdinEof:
    case MsgType::kSignal:
    case MsgType::kWinsize:
    case MsgType::kShutdown:
    case MsgType::kGeneration:
      return d == Direction::kToAgent;
    case MsgType::kStarted:
    case MsgType::kStdout:
    case MsgType::kStderr:
    case MsgType::kExit:
    case MsgType::kError:
    case MsgType::kGenerationAck:
      return d == Direction::kToHost;
  }
  return false;
}

// The payload size a type must have, or 0 if it varies.
uint32_t fixed_size(MsgType t) {
  switch (t) {
    case MsgType::kHello: return 8;
    case MsgType::kStdinEof: return 0;
    case MsgType::kSignal:
    case MsgType::kShutdown:
    case MsgType::kStarted:
    case MsgType::kWinsize:
    case MsgType::kStreamClosed: return 4;
    case MsgType::kCredit:
    case MsgType::kExit:
    case MsgType::kGenerationAck: return 8;
    default: return 0;
  }
}
bool has_fixed_size(MsgType t) {
  return t != MsgType::kExec && t != MsgType::kStdin && t != MsgType::kStdout && t != MsgType::kStderr &&
         t != MsgType::kError && t != MsgType::kGeneration;
}
// Upper bound on the payload of a variable-size type.
uint32_t max_size(MsgType t) {
  switch (t) {
    case MsgType::kExec: return kMaxPayload;
    case MsgType::kStdin:
    case MsgType::kStdout:
    case MsgType::kStderr: return kMaxDataPayload;
    case MsgType::kError: return 4 + kMaxErrorBytes;
    case MsgType::kGeneration: return 16 + kMaxEntropyBytes;
    default: return fixed_size(t);
  }
}

bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

const char* check_exec(const ExecRequest& e) {
  if (e.mode != Mode::kPipes && e.mode != Mode::kPty) return "exec request: unknown mode";
  if (e.mode == Mode::kPipes && (e.rows != 0 || e.cols != 0))
    return "exec request: a window size in pipes mode";
  if (e.argv.empty()) return "exec request: empty argv";
  if (e.argv.size() > kMaxArgc) return "exec request: too many arguments";
  if (e.env.size() > kMaxEnvc) return "exec request: too many environment entries";
  if (e.argv[0].empty()) return "exec request: empty program name (argv[0])";
  if (e.cwd.size() > kMaxCwdBytes) return "exec request: working directory too long";
  if (has_nul(e.cwd)) return "exec request: NUL byte in the working directory";
  for (const std::string& a : e.argv) {
    if (a.size() > kMaxStringBytes) return "exec request: argument too long";
    if (has_nul(a)) return "exec request: NUL byte in an argument";
  }
  for (const std::string& kv : e.env) {
    if (kv.size() > kMaxStringBytes) return "exec request: environment entry too long";
    if (has_nul(kv)) return "exec request: NUL byte in an environment entry";
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) return "exec request: environment entry not of the form KEY=VALUE";
  }
  // The whole encoding must fit one frame.
  size_t size = 16 + 4 + e.cwd.size();  // Fixed fields, then the cwd string.
  for (const std::string& a : e.argv) size += 4 + a.size();
  for (const std::string& kv : e.env) size += 4 + kv.size();
  if (size > kMaxPayload) return "exec request: arguments and environment larger than 1 MiB";
  return nullptr;
}

bool valid_stream(Direction d, Stream s) {
  if (d == Direction::kToAgent) return s == Stream::kStdout || s == Stream::kStderr;
  return s == Stream::kStdin;
}

void put_header(std::string* out, MsgType t, size_t payload) {
  put_u32(out, static_cast<uint32_t>(payload));
  put_u8(out, static_cast<uint8_t>(t));
  put_u8(out, 0);
  put_u16(out, 0);
}

// Parses the payload of a frame whose header (type, size bounds) was checked.
const char* parse_payload(MsgType t, Reader& r, Frame* f) {
  f->type = t;
  switch (t) {
    case MsgType::kHello: {
      uint32_t magic = 0;
      r.u32(&magic);
      r.u16(&f->version_min);
      r.u16(&f->version_max);
      if (magic != kHelloMagic) return "hello: wrong magic number (not a moss agent peer)";
      break;
    }
    case MsgType::kExec: {
      uint8_t mode = 0, z8 = 0;
      uint16_t z16 = 0;
      uint32_t argc = 0, envc = 0;
      r.u8(&mode);
      r.u8(&z8);
      r.u16(&f->exec.rows);
      r.u16(&f->exec.cols);
      r.u16(&z16);
      r.u32(&argc);
      r.u32(&envc);
      if (!r.ok()) return "exec request: truncated";
      if (z8 != 0 || z16 != 0) return "exec request: reserved bytes not zero";
      if (mode > static_cast<uint8_t>(Mode::kPty)) return "exec request: unknown mode";
      f->exec.mode = static_cast<Mode>(mode);
      if (argc == 0) return "exec request: empty argv";
      if (argc > kMaxArgc) return "exec request: too many arguments";
      if (envc > kMaxEnvc) return "exec request: too many environment entries";
      // Each string takes at least its 4-byte length: refuse counts the payload cannot hold
      // before allocating for them.
      if ((static_cast<uint64_t>(argc) + envc + 1) * 4 > r.left()) return "exec request: truncated";
      bool too_long = false;
      if (!r.string(&f->exec.cwd, kMaxCwdBytes, &too_long))
        return too_long ? "exec request: working directory too long" : "exec request: truncated";
      f->exec.argv.resize(argc);
      for (std::string& a : f->exec.argv)
        if (!r.string(&a, kMaxStringBytes, &too_long))
          return too_long ? "exec request: argument too long" : "exec request: truncated";
      f->exec.env.resize(envc);
      for (std::string& kv : f->exec.env)
        if (!r.string(&kv, kMaxStringBytes, &too_long))
          return too_long ? "exec request: environment entry too long" : "exec request: truncated";
      if (r.left() != 0) return "exec request: bytes after the last string";
      break;
    }
    case MsgType::kStdin:
    case MsgType::kStdout:
    case MsgType::kStderr:
      r.rest(&f->data);
      break;
    case MsgType::kStdinEof:
      break;
    case MsgType::kSignal:
    case MsgType::kShutdown:
    case MsgType::kStarted:
      r.u32(&f->number);
      break;
    case MsgType::kWinsize:
      r.u16(&f->rows);
      r.u16(&f->cols);
      break;
    case MsgType::kCredit:
    case MsgType::kStreamClosed: {
      uint8_t s = 0, z8 = 0;
      uint16_t z16 = 0;
      r.u8(&s);
      r.u8(&z8);
      r.u16(&z16);
      if (z8 != 0 || z16 != 0) return "credit/stream-closed: reserved bytes not zero";
      if (s > static_cast<uint8_t>(Stream::kStderr)) return "credit/stream-closed: unknown stream";
      f->stream = static_cast<Stream>(s);
      if (t == MsgType::kCredit) r.u32(&f->number);
      break;
    }
    case MsgType::kExit: {
      uint8_t sig = 0, core = 0;
      uint16_t z16 = 0;
      r.u8(&sig);
      r.u8(&core);
      r.u16(&z16);
      r.u32(&f->exit.code);
      if (sig > 1 || core > 1) return "exit: flag byte not 0 or 1";
      if (z16 != 0) return "exit: reserved bytes not zero";
      f->exit.signaled = sig == 1;
      f->exit.core_dumped = core == 1;
      break;
    }
    case MsgType::kError: {
      uint32_t code = 0;
      r.u32(&code);
      f->error = static_cast<ErrorCode>(code);
      r.rest(&f->data);
      break;
    }
    case MsgType::kGeneration: {
      uint64_t ns = 0;
      r.u64(&f->generation);
      r.u64(&ns);
      f->realtime_ns = static_cast<int64_t>(ns);
      r.rest(&f->data);
      break;
    }
    case MsgType::kGenerationAck:
      r.u64(&f->generation);
      break;
  }
  if (!r.ok()) return "truncated payload";
  return nullptr;
}

}  // namespace

std::string_view type_name(MsgType t) {
  switch (t) {
    case MsgType::kHello: return "HELLO";
    case MsgType::kExec: return "EXEC";
    case MsgType::kStdin: return "STDIN";
    case MsgType::kStdinEof: return "STDIN_EOF";
    case MsgType::kSignal: return "SIGNAL";
    case MsgType::kWinsize: return "WINSIZE";
    case MsgType::kShutdown: return "SHUTDOWN";
    case MsgType::kCredit: return "CREDIT";
    case MsgType::kStreamClosed: return "STREAM_CLOSED";
    case MsgType::kStarted: return "STARTED";
    case MsgType::kStdout: return "STDOUT";
    case MsgType::kStderr: return "STDERR";
    case MsgType::kExit: return "EXIT";
    case MsgType::kError: return "ERROR";
    case MsgType::kGeneration: return "GENERATION";
    case MsgType::kGenerationAck: return "GENERATION_ACK";
  }
  return "unknown";
}

// The rules of check_frame(): nullptr, or a static sentence.
static const char* frame_problem(Direction d, const Frame& f) {
  if (!valid_type(static_cast<uint8_t>(f.type))) return "unknown message type";
  if (!allowed(d, f.type))
    return d == Direction::kToAgent ? "a message the agent never receives" : "a message the host never receives";
  switch (f.type) {
    case MsgType::kHello:
      if (f.version_min == 0 || f.version_min > f.version_max) return "hello: bad version range";
      return nullptr;
    case MsgType::kExec:
      return check_exec(f.exec);
    case MsgType::kStdin:
    case MsgType::kStdout:
    case MsgType::kStderr:
      if (f.data.empty()) return "empty data frame";
      if (f.data.size() > kMaxDataPayload) return "data frame larger than 64 KiB";
      return nullptr;
    case MsgType::kStdinEof:
      return nullptr;
    case MsgType::kSignal:
      if (f.number < 1 || f.number > kMaxSignal) return "signal: number out of range 1-64";
      return nullptr;
    case MsgType::kShutdown:
      if (f.number > kMaxExitCode) return "shutdown: status above 255";
      return nullptr;
    case MsgType::kStarted:
      if (f.number == 0 || f.number > 0x7fffffffu) return "started: bad pid";
      return nullptr;
    case MsgType::kWinsize:
      return nullptr;
    case MsgType::kCredit:
      if (!valid_stream(d, f.stream)) return "credit: wrong stream for this direction";
      if (f.number < 1 || f.number > kMaxWindow) return "credit: amount out of range";
      return nullptr;
    case MsgType::kStreamClosed:
      if (!valid_stream(d, f.stream)) return "stream-closed: wrong stream for this direction";
      return nullptr;
    case MsgType::kExit:
      if (f.exit.signaled) {
        if (f.exit.code < 1 || f.exit.code > kMaxSignal) return "exit: signal out of range 1-64";
      } else {
        if (f.exit.code > kMaxExitCode) return "exit: status above 255";
        if (f.exit.core_dumped) return "exit: core dumped without a signal";
      }
      return nullptr;
    case MsgType::kError: {
      uint32_t c = static_cast<uint32_t>(f.error);
      if (c < 1 || c > static_cast<uint32_t>(ErrorCode::kResource)) return "error: unknown code";
      if (f.data.empty() || f.data.size() > kMaxErrorBytes) return "error: message empty or longer than 1024 bytes";
      for (char ch : f.data) {
        unsigned char u = static_cast<unsigned char>(ch);
        if (u < 0x20 || u == 0x7f) return "error: control character in the message";
      }
      return nullptr;
    }
    case MsgType::kGeneration:
      if (f.generation == 0) return "generation: number 0 (generations start at 1)";
      if (f.realtime_ns < 0) return "generation: negative realtime";
      if (f.data.size() < kMinEntropyBytes || f.data.size() > kMaxEntropyBytes)
        return "generation: entropy not 32-512 bytes";
      return nullptr;
    case MsgType::kGenerationAck:
      if (f.generation == 0) return "generation: number 0 (generations start at 1)";
      return nullptr;
  }
  return "unknown message type";
}

Result<void> check_frame(Direction d, const Frame& f) {
  if (const char* problem = frame_problem(d, f)) return Error(problem);
  return {};
}

Result<void> encode(Direction d, const Frame& f, std::string* out) {
  if (const char* problem = frame_problem(d, f)) return Error(problem);
  std::string p;
  switch (f.type) {
    case MsgType::kHello:
      put_u32(&p, kHelloMagic);
      put_u16(&p, f.version_min);
      put_u16(&p, f.version_max);
      break;
    case MsgType::kExec:
      put_u8(&p, static_cast<uint8_t>(f.exec.mode));
      put_u8(&p, 0);
      put_u16(&p, f.exec.rows);
      put_u16(&p, f.exec.cols);
      put_u16(&p, 0);
      put_u32(&p, static_cast<uint32_t>(f.exec.argv.size()));
      put_u32(&p, static_cast<uint32_t>(f.exec.env.size()));
      put_string(&p, f.exec.cwd);
      for (const std::string& a : f.exec.argv) put_string(&p, a);
      for (const std::string& kv : f.exec.env) put_string(&p, kv);
      break;
    case MsgType::kStdin:
    case MsgType::kStdout:
    case MsgType::kStderr:
      encode_data(f.type, f.data.data(), f.data.size(), out);
      return {};
    case MsgType::kStdinEof:
      break;
    case MsgType::kSignal:
    case MsgType::kShutdown:
    case MsgType::kStarted:
      put_u32(&p, f.number);
      break;
    case MsgType::kWinsize:
      put_u16(&p, f.rows);
      put_u16(&p, f.cols);
      break;
    case MsgType::kCredit:
    case MsgType::kStreamClosed:
      put_u8(&p, static_cast<uint8_t>(f.stream));
      put_u8(&p, 0);
      put_u16(&p, 0);
      if (f.type == MsgType::kCredit) put_u32(&p, f.number);
      break;
    case MsgType::kExit:
      put_u8(&p, f.exit.signaled ? 1 : 0);
      put_u8(&p, f.exit.core_dumped ? 1 : 0);
      put_u16(&p, 0);
      put_u32(&p, f.exit.code);
      break;
    case MsgType::kError:
      put_u32(&p, static_cast<uint32_t>(f.error));
      p.append(f.data);
      break;
    case MsgType::kGeneration:
      put_u64(&p, f.generation);
      put_u64(&p, static_cast<uint64_t>(f.realtime_ns));
      p.append(f.data);
      break;
    case MsgType::kGenerationAck:
      put_u64(&p, f.generation);
      break;
  }
  put_header(out, f.type, p.size());
  out->append(p);
  return {};
}

void encode_data(MsgType type, const void* data, size_t n, std::string* out) {
  if (n == 0 || n > kMaxDataPayload ||
      (type != MsgType::kStdin && type != MsgType::kStdout && type != MsgType::kStderr))
    abort();  // A caller's bug, not input.
  put_header(out, type, n);
  out->append(static_cast<const char*>(data), n);
}

void encode_simple(MsgType type, uint32_t number, std::string* out) {
  Frame f;
  f.type = type;
  f.number = number;
  Direction d = type == MsgType::kStarted ? Direction::kToHost : Direction::kToAgent;
  if (type != MsgType::kSignal && type != MsgType::kShutdown && type != MsgType::kStarted) abort();
  if (!encode(d, f, out).ok()) abort();
}

void encode_credit(Stream s, uint32_t bytes, Direction d, std::string* out) {
  Frame f;
  f.type = MsgType::kCredit;
  f.stream = s;
  f.number = bytes;
  if (!encode(d, f, out).ok()) abort();
}

void encode_stream_closed(Stream s, Direction d, std::string* out) {
  Frame f;
  f.type = MsgType::kStreamClosed;
  f.stream = s;
  if (!encode(d, f, out).ok()) abort();
}

DecodeStatus decode_frame(Direction d, const uint8_t* data, size_t n, Frame* out, size_t* consumed,
                          Error* error) {
  // Check what the header says as soon as the bytes are there, so a peer sending garbage is
  // refused before we wait for (or buffer) a payload that will never be valid.
  if (n >= 5) {
    uint8_t t = data[4];
    if (!valid_type(t)) {
      *error = Error("unknown message type");
      return DecodeStatus::kError;
    }
    if (!allowed(d, static_cast<MsgType>(t))) {
      *error = Error(d == Direction::kToAgent ? "a message the agent never receives" : "a message the host never receives");
      return DecodeStatus::kError;
    }
  }
  if (n >= 4) {
    uint32_t len = le32(data);
    if (n >= 5) {
      MsgType t = static_cast<MsgType>(data[4]);
      if (has_fixed_size(t) ? len != fixed_size(t) : len > max_size(t)) {
        *error = Error("payload length wrong for the message type");
        return DecodeStatus::kError;
      }
    }
    if (len > kMaxPayload) {
      *error = Error("frame larger than 1 MiB");
      return DecodeStatus::kError;
    }
  }
  for (size_t i = 5; i < kHeaderSize && i < n; ++i) {
    if (data[i] != 0) {
      *error = Error("reserved header bytes not zero");
      return DecodeStatus::kError;
    }
  }
  if (n < kHeaderSize) return DecodeStatus::kNeedMore;
  uint32_t len = le32(data);
  if (n - kHeaderSize < len) return DecodeStatus::kNeedMore;
  Frame f;
  Reader r(data + kHeaderSize, len);
  if (const char* err = parse_payload(static_cast<MsgType>(data[4]), r, &f)) {
    *error = Error(err);
    return DecodeStatus::kError;
  }
  if (const char* err = frame_problem(d, f)) {
    *error = Error(err);
    return DecodeStatus::kError;
  }
  *out = std::move(f);
  *consumed = kHeaderSize + len;
  return DecodeStatus::kFrame;
}

void Decoder::feed(const void* data, size_t n) {
  if (failed_) return;
  // Drop what was consumed before growing, so the buffer stays near one frame.
  if (pos_ > 0 && (pos_ == buf_.size() || pos_ >= (64u << 10))) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  buf_.append(static_cast<const char*>(data), n);
}

DecodeStatus Decoder::next(Frame* out) {
  if (failed_) return DecodeStatus::kError;
  size_t used = 0;
  DecodeStatus s = decode_frame(dir_, reinterpret_cast<const uint8_t*>(buf_.data()) + pos_, buf_.size() - pos_,
                                out, &used, &error_);
  if (s == DecodeStatus::kFrame) pos_ += used;
  if (s == DecodeStatus::kError) failed_ = true;
  return s;
}

}  // namespace moss::agent
