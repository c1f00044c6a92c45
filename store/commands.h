// The CLI's spore and store commands (`moss store gc`, `moss pack`, `moss unpack`,
// `moss inspect`): each prints what it did on stdout, progress on stderr when that is a
// terminal, and returns a one-sentence error for the caller to print.
#pragma once

#include <string>

#include "base/result.h"

namespace moss::store {

// `store_dir` empty: default_store_dir().
Result<void> store_gc_command(const std::string& store_dir);
Result<void> pack_command(const std::string& spore, const std::string& out_file, const std::string& store_dir);
Result<void> unpack_command(const std::string& pack_file, const std::string& out_dir, const std::string& store_dir);
Result<void> inspect_command(const std::string& spore);

}  // namespace moss::store
