// Small file helpers that return Results with actionable messages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace moss {

// Reads the whole of an open file (from offset 0, with pread) into memory, up to max_bytes.
Result<std::vector<uint8_t>> read_fd_fully(int fd, uint64_t max_bytes, const std::string& what);
Result<std::string> read_text_file(const std::string& path);
Result<void> write_all(int fd, const void* data, size_t len);

}  // namespace moss
