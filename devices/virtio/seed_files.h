// A test helper for the tests whose cases are also a fuzz target's seeds (the saved-state and
// request tests): the files of fuzz/corpus/<target> are the cases, byte for byte.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace moss::virtio {

// Each case `c` is the file fuzz/corpus/`target`/c.name holding c.*bytes; with the environment
// variable `write_env` set, (re)writes the files first.
template <typename Case>
void expect_seed_files(const std::vector<Case>& cases, std::vector<uint8_t> Case::*bytes, const std::string& target,
                       const char* write_env) {
  const std::string dir = std::string(MOSS_SOURCE_DIR) + "/fuzz/corpus/" + target + "/";
  const bool write = std::getenv(write_env) != nullptr;
  for (const Case& c : cases) {
    const std::string path = dir + c.name;
    const std::vector<uint8_t>& want = c.*bytes;
    if (write) {
      std::filesystem::create_directories(dir);
      std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(want.data()),
                                                  static_cast<std::streamsize>(want.size()));
    }
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in.good()) << path << " is missing; run with " << write_env << "=1 to write it";
    std::vector<uint8_t> got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(got, want) << path << " differs from the case; run with " << write_env << "=1";
  }
}

}  // namespace moss::virtio
