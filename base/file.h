// Small file helpers that return Results with actionable messages.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace moss {

// What kind of file a st_mode is, for messages: "a FIFO", "a directory", "a character device".
std::string describe_file_type(unsigned mode);
// The size of an open regular file; `what` names it in errors ("the kernel /boot/x").
Result<uint64_t> regular_file_size(int fd, const std::string& what);
// Fills `out` from `offset` with pread, or fails if the file ends first.
Result<void> pread_exact(int fd, uint64_t offset, std::span<uint8_t> out, const std::string& what);
// The first min(file size, max_bytes) bytes of an open regular file.
Result<std::vector<uint8_t>> read_file_head(int fd, uint64_t max_bytes, const std::string& what);
Result<std::string> read_text_file(const std::string& path);
Result<void> write_all(int fd, const void* data, size_t len);

}  // namespace moss
