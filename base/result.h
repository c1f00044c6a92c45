// Result<T>: a value or an Error. Errors caused by input (user, guest, peer) are values;
// our own bugs are assertions (MOSS_ASSERT).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace moss {

struct Error {
  std::string message;  // One sentence a user can act on (no trailing period needed).
  int err = 0;          // errno, when the cause was a system call.
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

 private:
  Error err_;
  bool ok_ = true;
};

inline Error make_error(std::string message, int err = 0) { return Error{std::move(message), err}; }

[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "moss: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace moss

#define MOSS_ASSERT(cond) \
  ((cond) ? static_cast<void>(0) : ::moss::assert_fail(#cond, __FILE__, __LINE__))

// Propagates an error from a Result-returning expression; binds the value otherwise.
#define MOSS_CONCAT_INNER(a, b) a##b
#define MOSS_CONCAT(a, b) MOSS_CONCAT_INNER(a, b)
#define MOSS_TRY_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                   \
  if (!tmp.ok()) return std::move(tmp).take_error(); \
  decl = std::move(tmp).value()
#define MOSS_TRY(decl, expr) MOSS_TRY_IMPL(MOSS_CONCAT(moss_try_, __LINE__), decl, expr)
#define MOSS_CHECK(expr)                                             \
  do {                                                               \
    auto moss_check_ = (expr);                                       \
    if (!moss_check_.ok()) return std::move(moss_check_).take_error(); \
  } while (0)
