// Internal to cfnsr::media: the one check of a caller's frame, used by the recogniser and the building blocks.
#pragma once

#include <cstddef>

#include "cfnsr/media.hpp"

namespace cfnsr::media::detail {

// Error(InvalidArgument) naming frame i when it has no pixels, no positive size, or rows shorter than width x 3.
void check_image(const Image& f, std::size_t i);

}  // namespace cfnsr::media::detail
