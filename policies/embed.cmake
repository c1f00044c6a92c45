# Generates a C++ header holding the text of every .policy file, so that a jailed process
# needs no file to load its policy. Run by policies/CMakeLists.txt at build time:
#   cmake -DOUT=builtin_policies.inc -DINPUTS="a.policy|b.policy" -P embed.cmake
string(REPLACE "|" ";" INPUTS "${INPUTS}")
set(body "// Generated from policies/*.policy by policies/embed.cmake. Do not edit.\n")
foreach(path IN LISTS INPUTS)
  get_filename_component(name "${path}" NAME_WE)
  file(READ "${path}" text)
  string(FIND "${text}" ")moss_policy\"" bad)
  if(NOT bad EQUAL -1)
    message(FATAL_ERROR "${path} contains the raw-string delimiter )moss_policy\"")
  endif()
  string(APPEND body "{\"${name}\", R\"moss_policy(${text})moss_policy\"},\n")
endforeach()
# Only touch the output when it changes, so dependents are not rebuilt for nothing.
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
  if(old STREQUAL body)
    return()
  endif()
endif()
file(WRITE "${OUT}" "${body}")
