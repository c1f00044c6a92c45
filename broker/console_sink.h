// Where the guest console's output goes. Without a command it is the VM's only output: this
// process's stdout. With one (`moss run -- CMD`), stdout is CMD's alone, so the console goes to
// --console FILE, and in any case its last lines are kept to explain a VM that fails.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/fd.h"
#include "base/result.h"

namespace moss {

class ConsoleSink {
 public:
  static constexpr size_t kTailBytes = 8192;

  // `to_stdout`: write through to fd 1. `file`: append to it (created 0644 if missing). It may
  // be a regular file, a terminal or another character device, or a FIFO whose reader has it
  // open already (else an Error at once: nothing waits for a reader). Writes never block the
  // broker: a FIFO or terminal that falls behind loses console output, with one warning.
  static Result<ConsoleSink> open(bool to_stdout, const std::string& file);
  // Removes `file` if open() created it and the VM never started (nothing was written), so
  // that a run that fails before leaves no empty file behind.
  void remove_if_unused();

  void write(const uint8_t* data, size_t size);
  // The last lines written (at most kTailBytes, whole lines, carriage returns dropped).
  std::string tail() const;
  bool to_stdout() const { return to_stdout_; }
  const std::string& file() const { return file_; }

 private:
  bool to_stdout_ = false;
  std::string file_;
  UniqueFd fd_;
  std::string tail_;
  bool trimmed_ = false;
  bool warned_ = false;
  bool created_ = false, written_ = false;
};

}  // namespace moss
