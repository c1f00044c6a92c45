// The moss agent protocol: how the host runs a program in the guest over one vsock stream.
//
// Shared by moss-init (the agent, static, -fno-exceptions -fno-rtti: plain standard library, no
// iostreams, no exceptions thrown) and the host (library moss_agent_protocol). Everything here
// is pure: bytes in, a value or a one-line error out; no I/O.
//
// Channel. The agent listens on AF_VSOCK port kAgentPort (any CID). The host reaches it through
// the vsock worker's Unix socket: "CONNECT 1124\n", answered "OK <n>\n", then this protocol.
// One connection runs at most one program; several connections may run at once.
//
// Frames. Every message is one frame: an 8-byte header, then `length` payload bytes.
//   u32 length   payload bytes, little-endian, <= kMaxPayload (and a per-type bound below)
//   u8  type     MsgType; a type the receiving side never receives is an error
//   u8  zero[3]  must be zero
// Integers are little-endian. A "string" is u32 length + bytes (no NUL byte inside).
//
// A session, host (H) and agent (A):
//   H: HELLO{min,max} EXEC{...} [STDIN...]      may be sent back to back
//   A: HELLO{v,v}                                the version chosen (or ERROR kVersion, close)
//   A: STARTED{pid} | ERROR{kExecFailed} EXIT    (exec failure: 127 not found, 126 otherwise)
//   both directions stream: STDIN/STDIN_EOF/SIGNAL/WINSIZE/CREDIT/STREAM_CLOSED from H,
//                           STDOUT/STDERR/CREDIT/STREAM_CLOSED from A
//   A: EXIT{...}                                 after the program was reaped and its output
//                                                read to EAGAIN/EOF and sent
//   H: SHUTDOWN{status} (optional; also valid right after HELLO), or close.
//
// Generation (version 2). Right after HELLO, before (or instead of) EXEC, the host may send
// GENERATION{generation, realtime_ns, entropy}; the agent answers GENERATION_ACK{generation}
// once it has mixed the entropy into the kernel's pool (RNDADDENTROPY, credited), stepped
// CLOCK_REALTIME to realtime_ns (unless 0: leave the clock) and published the number in
// /run/moss/generation; or ERROR{kResource} if it could not. The connection then takes EXEC,
// SHUTDOWN or another GENERATION as after HELLO. A restored VM gets one before any command
// runs, so two VMs restored from one spore draw different random numbers.
// SHUTDOWN makes moss-init report `status` through the exit port and power off, as it does
// when a kernel-command-line program ends. A protocol error is answered ERROR{kProtocol} and the
// connection closed (the program, if any, is killed).
//
// Flow control. Each byte stream (stdin to the agent; stdout, stderr to the host) has its own
// credit window: after EXEC both sides start with kInitialWindow bytes of credit per stream, a
// DATA frame uses up its length, and the receiver returns credit with CREDIT{stream, n} once it
// has passed the bytes on (to the program's stdin, to the user's stdout). Sending beyond the
// credit, or returning credit beyond kMaxWindow, is a protocol error. So a receiver buffers at
// most one window per stream and always keeps reading the socket: control frames (SIGNAL,
// WINSIZE, EXIT) are never stuck behind data nobody reads, a program that reads no stdin still
// streams its output and exits, and a stalled stdout reader does not stall stderr.
// STREAM_CLOSED{stream}: the host's reader of stdout/stderr went away (the agent closes that
// pipe, so the program gets EPIPE/SIGPIPE as it would locally), or the program closed its
// stdin (the host stops reading the user's stdin).
//
// Modes. Pipes: three pipes, STDOUT and STDERR separate; the program leads a new session
// without a controlling terminal; SIGNAL goes to its process group. Pty: the program leads a
// new session whose controlling terminal is a fresh pty of rows x cols; everything it prints
// comes as STDOUT; STDIN bytes are typed into the terminal (0x03 is ^C); WINSIZE resizes it
// (the kernel sends SIGWINCH); SIGNAL goes to the terminal's foreground process group;
// STDIN_EOF types the VEOF character (^D) if the terminal is in canonical mode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace moss::agent {

// The vsock port the agent listens on in the guest (AF_VSOCK, VMADDR_CID_ANY). Above 1023 so it
// stays clear of the privileged range other guest software may use; 0x464 = 1124 = 1024 + 100.
inline constexpr uint32_t kAgentPort = 1124;

inline constexpr uint16_t kProtocolVersion = 2;  // The newest version both sides speak.
inline constexpr uint16_t kMinProtocolVersion = 1;
inline constexpr uint16_t kGenerationVersion = 2;  // The first version with GENERATION.
inline constexpr uint32_t kHelloMagic = 0x7373'6f6d;  // "moss" as little-endian bytes.

inline constexpr size_t kHeaderSize = 8;
inline constexpr uint32_t kMaxPayload = 1u << 20;        // Any frame (an EXEC is the largest).
inline constexpr uint32_t kMaxDataPayload = 64u << 10;   // STDIN/STDOUT/STDERR frames.
inline constexpr uint32_t kMaxArgc = 16384;
inline constexpr uint32_t kMaxEnvc = 4096;
inline constexpr uint32_t kMaxStringBytes = 128u << 10;  // One argv/env string (Linux MAX_ARG_STRLEN).
inline constexpr uint32_t kMaxCwdBytes = 4095;           // PATH_MAX - 1.
inline constexpr uint32_t kMaxErrorBytes = 1024;
inline constexpr uint32_t kMaxSignal = 64;               // Linux _NSIG - 1.
inline constexpr uint32_t kMaxExitCode = 255;
inline constexpr uint32_t kInitialWindow = 256u << 10;   // Credit per stream at EXEC.
inline constexpr uint32_t kMaxWindow = 16u << 20;        // Credit outstanding per stream.
inline constexpr uint32_t kMinEntropyBytes = 32;         // GENERATION's entropy: 256 bits at least,
inline constexpr uint32_t kMaxEntropyBytes = 512;        // and at most the kernel pool's size.

enum class MsgType : uint8_t {
  kHello = 0x01,         // both: u32 magic, u16 min_version, u16 max_version
  kExec = 0x02,          // to agent: see ExecRequest
  kStdin = 0x03,         // to agent: 1..kMaxDataPayload bytes
  kStdinEof = 0x04,      // to agent: empty
  kSignal = 0x05,        // to agent: u32 signal 1..kMaxSignal
  kWinsize = 0x06,       // to agent: u16 rows, u16 cols
  kShutdown = 0x07,      // to agent: u32 status 0..255
  kCredit = 0x08,        // both: u8 stream, u8 zero[3], u32 bytes 1..kMaxWindow
  kStreamClosed = 0x09,  // both: u8 stream, u8 zero[3]
  kGeneration = 0x0a,    // to agent (version 2): u64 generation (>= 1), i64 realtime_ns (0: do not
                         //          step; else > 0, ns since the epoch), then the entropy
                         //          (kMinEntropyBytes..kMaxEntropyBytes bytes)
  kStarted = 0x10,       // to host: u32 pid (> 0)
  kStdout = 0x11,        // to host: 1..kMaxDataPayload bytes
  kStderr = 0x12,        // to host: 1..kMaxDataPayload bytes
  kExit = 0x13,          // to host: u8 signaled (0/1), u8 core_dumped (0/1, 0 unless signaled),
                         //          u16 zero, u32 code (exit code 0..255 or signal 1..64)
  kError = 0x14,         // to host: u32 ErrorCode, then the message (1..kMaxErrorBytes bytes,
                         //          no control characters)
  kGenerationAck = 0x15, // to host (version 2): u64 generation (the one now in effect)
};

enum class Direction { kToAgent, kToHost };

// Streams named in CREDIT and STREAM_CLOSED. To the agent: kStdout/kStderr (credit for, or the
// end of, the host's reader); to the host: kStdin.
enum class Stream : uint8_t { kStdin = 0, kStdout = 1, kStderr = 2 };

enum class Mode : uint8_t { kPipes = 0, kPty = 1 };

enum class ErrorCode : uint32_t {
  kProtocol = 1,    // A malformed or unexpected frame; the agent closes the connection.
  kVersion = 2,     // No protocol version in common.
  kExecFailed = 3,  // The program could not be started; an EXIT with 126/127 follows.
  kResource = 4,    // The agent could not set the program up (fork, pipe, pty failed).
};

// EXEC payload:
//   u8 mode, u8 zero, u16 rows, u16 cols, u16 zero   (rows, cols must be 0 in pipes mode)
//   u32 argc (1..kMaxArgc), u32 envc (0..kMaxEnvc)
//   string cwd (0..kMaxCwdBytes; empty: "/"), argc strings, envc strings "KEY=VALUE"
// Checked: argv[0] non-empty, every string at most kMaxStringBytes and free of NUL bytes, every
// env entry has a non-empty KEY before '=', nothing after the last string.
struct ExecRequest {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // Added to (or replacing) the guest's default environment.
  std::string cwd;
  Mode mode = Mode::kPipes;
  uint16_t rows = 0;
  uint16_t cols = 0;
  bool operator==(const ExecRequest&) const = default;
};

struct ExitInfo {
  bool signaled = false;
  bool core_dumped = false;
  uint32_t code = 0;  // Exit code, or the signal number if signaled.
  // What a shell would report: the code, or 128 + the signal.
  int shell_status() const { return signaled ? 128 + static_cast<int>(code) : static_cast<int>(code); }
  bool operator==(const ExitInfo&) const = default;
};

// One decoded message. Only the fields of its type are meaningful; the rest keep their
// defaults (so frames compare equal after a round trip).
struct Frame {
  MsgType type = MsgType::kHello;
  uint16_t version_min = 0;  // kHello
  uint16_t version_max = 0;  // kHello
  ExecRequest exec;          // kExec
  std::string data;          // kStdin, kStdout, kStderr; the message of kError; kGeneration's entropy
  uint32_t number = 0;       // kSignal: signal; kShutdown: status; kStarted: pid; kCredit: bytes
  Stream stream = Stream::kStdin;  // kCredit, kStreamClosed
  uint16_t rows = 0;         // kWinsize
  uint16_t cols = 0;         // kWinsize
  ExitInfo exit;             // kExit
  ErrorCode error = ErrorCode::kProtocol;  // kError
  uint64_t generation = 0;   // kGeneration, kGenerationAck
  int64_t realtime_ns = 0;   // kGeneration (its entropy is in `data`)
  bool operator==(const Frame&) const = default;
};

// Checks every field of `f` against the rules above for a frame travelling in direction `d`.
// The error is a short sentence naming the problem. Used by encode() and by the decoder, so
// both sides apply the same rules.
Result<void> check_frame(Direction d, const Frame& f);

// Appends the encoding of `f` to *out, or returns check_frame's error (nothing is appended then).
Result<void> encode(Direction d, const Frame& f, std::string* out);

// Shorthands that cannot fail for valid arguments (our own bugs otherwise: they abort).
void encode_data(MsgType type, const void* data, size_t n, std::string* out);  // 1..kMaxDataPayload
void encode_simple(MsgType type, uint32_t number, std::string* out);  // kSignal, kShutdown, kStarted
void encode_credit(Stream s, uint32_t bytes, Direction d, std::string* out);
void encode_stream_closed(Stream s, Direction d, std::string* out);

enum class DecodeStatus { kFrame, kNeedMore, kError };

// Decodes the frame at the start of [data, data + n) travelling in direction `d`.
// kFrame: *out is set and *consumed is its size. kNeedMore: not a whole frame yet (the header
// seen so far is valid). kError: *error is set. Never reads past n.
DecodeStatus decode_frame(Direction d, const uint8_t* data, size_t n, Frame* out, size_t* consumed, Error* error);

// Incremental decoder: feed it the bytes read from the socket, take whole frames out.
// Buffers at most one partial frame plus what was fed since the last next() drained it.
// After an error every next() returns kError.
class Decoder {
 public:
  explicit Decoder(Direction d) : dir_(d) {}
  void feed(const void* data, size_t n);
  DecodeStatus next(Frame* out);
  // After kError: why (a short sentence); nullptr before.
  const Error* error() const { return failed_ ? &error_ : nullptr; }
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  Direction dir_;
  std::string buf_;
  size_t pos_ = 0;
  bool failed_ = false;
  Error error_;
};

// Human names, for messages: "STDOUT", "EXEC", ...; "unknown" for anything else.
std::string_view type_name(MsgType t);

}  // namespace moss::agent
