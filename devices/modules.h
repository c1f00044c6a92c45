// The registry of device modules (devices/module.h): every kind moss knows, by name. The one
// place that lists them; the broker looks kinds up here and has no list of its own.
#pragma once

#include <string_view>
#include <vector>

#include "devices/module.h"

namespace moss::device {

// The module of `kind` ("blk", "vsock", "null"), or nullptr.
const Module* find(std::string_view kind);
std::vector<std::string_view> kinds();

}  // namespace moss::device
