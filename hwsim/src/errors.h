// Errors the simulator raises on bad input. They carry the whole message (file, line, field, why), so the CLI
// prints them as they are and the Python binding turns them into ValueError subclasses.
#pragma once

#include <stdexcept>
#include <string>

namespace spatten::hwsim {

// A trace (official CSV, native file or in-memory columns) is malformed or asks for absurd sizes.
class TraceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A preset is missing, malformed, or lacks a parameter a component needs.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace spatten::hwsim
