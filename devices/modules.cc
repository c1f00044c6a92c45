#include "devices/modules.h"

#include "devices/blk/module.h"
#include "devices/null/module.h"
#include "devices/vsock/module.h"

namespace moss::device {
namespace {

const Module* const kModules[] = {&blk::module(), &vsock::module(), &null::module()};

}  // namespace

const Module* find(std::string_view kind) {
  for (const Module* m : kModules) {
    if (m->kind() == kind) return m;
  }
  return nullptr;
}

std::vector<std::string_view> kinds() {
  std::vector<std::string_view> out;
  for (const Module* m : kModules) out.push_back(m->kind());
  return out;
}

}  // namespace moss::device
