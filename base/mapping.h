// Mapping: sole owner of an mmap'd range; munmaps it on destruction.
//
//   MOSS_TRY(Mapping ram, Mapping::map(bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, "guest RAM"));
//   uint8_t* p = ram.bytes();
#pragma once

#include <sys/mman.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

#include "base/result.h"

namespace moss {

class Mapping {
 public:
  Mapping() = default;
  // Adopts a range mapped elsewhere (`addr` from mmap, `size` as passed to it).
  Mapping(void* addr, size_t size) : addr_(addr), size_(size) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  Mapping(Mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~Mapping() { reset(); }

  // mmap(nullptr, size, prot, flags, fd, offset). `what` names the range for the error:
  // "cannot map WHAT: Cannot allocate memory".
  static Result<Mapping> map(size_t size, int prot, int flags, int fd, off_t offset, std::string_view what) {
    void* p = ::mmap(nullptr, size, prot, flags, fd, offset);
    if (p == MAP_FAILED) return sys_error("map", what);
    return Mapping(p, size);
  }
  // Anonymous private memory.
  static Result<Mapping> anonymous(size_t size, int prot, std::string_view what, int extra_flags = 0) {
    return map(size, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0, what);
  }

  void* get() const { return addr_; }
  uint8_t* bytes() const { return static_cast<uint8_t*>(addr_); }
  size_t size() const { return size_; }
  bool valid() const { return addr_ != nullptr; }
  explicit operator bool() const { return valid(); }

  // Gives up ownership; the caller munmaps.
  void* release() {
    size_ = 0;
    return std::exchange(addr_, nullptr);
  }
  void reset() {
    // munmap fails only for arguments mmap gave us: that would be our bug.
    if (addr_ != nullptr) MOSS_ASSERT(::munmap(addr_, size_) == 0);
    addr_ = nullptr;
    size_ = 0;
  }

 private:
  void* addr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace moss
