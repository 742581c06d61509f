// Every simulated block is registered by name with a mandatory one-line description (`spatten-sim --list`).
// Adding a component: write its class, then add one line to register_builtin_components() in registry.cpp.
#pragma once

#include <string>
#include <vector>

namespace spatten::hwsim {

struct ComponentInfo {
  std::string name;
  std::string description;
};

class ComponentRegistry {
 public:
  // Throws std::invalid_argument on an empty name or description, or a duplicate name.
  void add(const std::string& name, const std::string& description);
  const std::vector<ComponentInfo>& components() const { return components_; }
  bool has(const std::string& name) const;

 private:
  std::vector<ComponentInfo> components_;
};

// The registry of the built-in components (built once, read-only afterwards).
const ComponentRegistry& builtin_components();

}  // namespace spatten::hwsim
