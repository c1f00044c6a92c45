// Result<T>: a value or an Error. Errors caused by input (user, guest, peer, the host's state)
// are values; our own bugs are assertions (MOSS_ASSERT).
//
// An Error is one sentence a user can act on, plus what a caller may need to decide on: the
// errno of the system call that failed (0 if none) and its kind (a timeout is a kind, not a
// message to compare). Context is added on the way up, outermost first:
//
//   MOSS_TRY_CTX(UniqueFd fd, open_file(path), "the disk " + path);
//   // -> "the disk /x: cannot open /x: No such file or directory"
//   return sys_error("open", path);  // after a failed ::open: errno is read once, here
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace moss {

struct Error {
  enum class Kind {
    kFailed,   // Anything else: the message says what.
    kTimeout,  // Something did not happen before its deadline.
  };

  Error() = default;
  // `err`: the errno when the cause was a system call. ETIMEDOUT makes a kTimeout.
  explicit Error(std::string m, int e = 0) : message(std::move(m)), err(e), kind(e == ETIMEDOUT ? Kind::kTimeout : Kind::kFailed) {}
  Error(std::string m, int e, Kind k) : message(std::move(m)), err(e), kind(k) {}

  bool is_timeout() const { return kind == Kind::kTimeout; }

  // Says what was being done, on what: "CONTEXT: MESSAGE". Keeps err and kind.
  Error& add_context(std::string_view context) & {
    if (!context.empty()) message = std::string(context) + ": " + message;
    return *this;
  }
  Error add_context(std::string_view context) && { return std::move(add_context(context)); }

  std::string message;  // One sentence a user can act on (no trailing period needed).
  int err = 0;          // errno, when the cause was a system call.
  Kind kind = Kind::kFailed;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design.
  Result(Error error) : v_(std::move(error)) {}      // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(v_); }
  Error take_error() && { return std::get<1>(std::move(v_)); }
  // On error, prefixes `context` (Error::add_context); a value passes through.
  Result context(std::string_view context) && {
    if (!ok()) std::get<1>(v_).add_context(context);
    return std::move(*this);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : err_(std::move(error)), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }
  Error take_error() && { return std::move(err_); }
  Result context(std::string_view context) && {
    if (!ok_) err_.add_context(context);
    return std::move(*this);
  }

 private:
  Error err_;
  bool ok_ = true;
};

inline Error make_error(std::string message, int err = 0) { return Error(std::move(message), err); }

// A deadline passed: "MESSAGE", kind kTimeout, err ETIMEDOUT.
inline Error timeout_error(std::string message) { return Error(std::move(message), ETIMEDOUT, Error::Kind::kTimeout); }

// The text of an errno value ("No such file or directory"), for the few sentences that put it
// elsewhere than at their end ("the disk is full (Disk quota exceeded)"); the helpers below
// make the usual ones.
inline std::string errno_text(int err) { return std::strerror(err); }

// The sentence for a failed system call: "cannot OP WHAT: <strerror(err)>", or "cannot OP:
// ..." when `what` is empty. For logs that are not Errors.
inline std::string sys_message(std::string_view op, std::string_view what, int err) {
  std::string m = "cannot ";
  m += op;
  if (!what.empty()) {
    m += ' ';
    m += what;
  }
  m += ": ";
  m += errno_text(err);
  return m;
}

// The sentence for a failure that does not read "cannot OP WHAT": "CONTEXT: <strerror(err)>",
// as in errno_message("KVM_RUN failed on vCPU 0", EFAULT) or errno_message(path, EIO).
inline std::string errno_message(std::string_view context, int err) {
  std::string m(context);
  m += ": ";
  m += errno_text(err);
  return m;
}

// An Error for the system call that just failed, reading errno once:
//   sys_error("open", path) -> "cannot open /x: No such file or directory" (err ENOENT).
inline Error sys_error(std::string_view op, std::string_view what = {}) {
  int e = errno;
  return Error(sys_message(op, what, e), e);
}
// The same for an errno value already saved (or returned, as by pthread_* and io_uring).
inline Error sys_error_code(int err, std::string_view op, std::string_view what = {}) {
  return Error(sys_message(op, what, err), err);
}
// Errors of errno_message: errno_error reads errno once, errno_error_code takes a saved value.
//   errno_error("poll failed") -> "poll failed: Bad address" (err EFAULT).
inline Error errno_error(std::string_view context) {
  int e = errno;
  return Error(errno_message(context, e), e);
}
inline Error errno_error_code(int err, std::string_view context) { return Error(errno_message(context, err), err); }

[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "moss: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace moss

#define MOSS_ASSERT(cond) \
  ((cond) ? static_cast<void>(0) : ::moss::assert_fail(#cond, __FILE__, __LINE__))

#define MOSS_CONCAT_INNER(a, b) a##b
#define MOSS_CONCAT(a, b) MOSS_CONCAT_INNER(a, b)

// MOSS_TRY(decl, expr): returns the Error of a Result-returning `expr`; binds its value to
// `decl` otherwise.  MOSS_TRY(auto fd, open_file(path));
#define MOSS_TRY_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                   \
  if (!tmp.ok()) return std::move(tmp).take_error(); \
  decl = std::move(tmp).value()
#define MOSS_TRY(decl, expr) MOSS_TRY_IMPL(MOSS_CONCAT(moss_try_, __LINE__), decl, expr)

// MOSS_TRY_CTX(decl, expr, context): MOSS_TRY, with `context` (a string, built only on error)
// put before the message: "CONTEXT: MESSAGE".
#define MOSS_TRY_CTX_IMPL(tmp, decl, expr, context)                                 \
  auto tmp = (expr);                                                               \
  if (!tmp.ok()) return std::move(tmp).take_error().add_context(context);          \
  decl = std::move(tmp).value()
#define MOSS_TRY_CTX(decl, expr, context) MOSS_TRY_CTX_IMPL(MOSS_CONCAT(moss_try_, __LINE__), decl, expr, context)

// MOSS_TRY_VOID(expr): returns the Error of a Result-returning `expr`; its value, if any, is
// not needed.  MOSS_TRY_VOID(write_all(fd, buf, n));
#define MOSS_TRY_VOID(expr)                                                \
  do {                                                                     \
    auto moss_try_void_ = (expr);                                          \
    if (!moss_try_void_.ok()) return std::move(moss_try_void_).take_error(); \
  } while (0)
#define MOSS_TRY_VOID_CTX(expr, context)                                                      \
  do {                                                                                        \
    auto moss_try_void_ = (expr);                                                             \
    if (!moss_try_void_.ok()) return std::move(moss_try_void_).take_error().add_context(context); \
  } while (0)
