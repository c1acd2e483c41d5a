// The CPU path switches read from the environment (FUSEDLSTM_CPU_*): each is
// read once, and a value outside its list raises rather than being ignored,
// so a mistyped switch can never leave a run on a path it did not ask for.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

namespace fusedlstm {

// The index in `choices` of environment variable `name`'s value; an unset or
// empty variable is choices[0] (the default). Any other value raises
// "<name> must be 'a', 'b' or 'c', got '<value>'".
inline int env_choice(const char* name, std::initializer_list<const char*> choices) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return 0;
  int index = 0;
  std::string listed;
  for (const char* choice : choices) {
    if (std::strcmp(value, choice) == 0) return index;
    ++index;
    listed += std::string(index == 1 ? "'" : index == static_cast<int>(choices.size()) ? " or '" : ", '") +
              choice + "'";
  }
  TORCH_CHECK(false, name, " must be ", listed, ", got '", value, "'");
  return 0;
}

}  // namespace fusedlstm
