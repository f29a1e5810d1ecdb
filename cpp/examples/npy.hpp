// Reading float32 .npy files (NumPy's format 1.0-3.0, little-endian, C order): how the example gets preprocessed
// inputs that Python wrote (`cfnsr predict --save-inputs DIR` or numpy.save); writing uint8/float32 ones (what
// cfnsr_predict --save-inputs writes, for numpy.load).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace npy {

struct Array {
  std::vector<int64_t> shape;
  std::vector<float> data;      // float32 arrays
  std::vector<uint8_t> bytes;   // uint8 arrays (a media artifact's frames)
};

// A float32 or (allow_uint8) uint8 array.
inline Array load(const std::string& path, bool allow_uint8) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw std::runtime_error(path + ": not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    in.read(reinterpret_cast<char*>(b), 2);
    header_len = b[0] | (b[1] << 8);
  } else if (magic[6] == 2 || magic[6] == 3) {
    unsigned char b[4];
    in.read(reinterpret_cast<char*>(b), 4);
    header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    throw std::runtime_error(path + ": unsupported .npy version " + std::to_string(magic[6]));
  }
  std::string header(header_len, '\0');
  if (!in.read(&header[0], header_len)) throw std::runtime_error(path + ": truncated header");
  auto field = [&](const std::string& key) {
    auto at = header.find("'" + key + "'");
    if (at == std::string::npos) throw std::runtime_error(path + ": header has no '" + key + "'");
    return header.substr(header.find(':', at) + 1);
  };
  const std::string descr = field("descr");
  const bool is_u8 = descr.find("'|u1'") != std::string::npos || descr.find("'uint8'") != std::string::npos;
  if (!(is_u8 && allow_uint8) && descr.find("'<f4'") == std::string::npos &&
      descr.find("'float32'") == std::string::npos)
    throw std::runtime_error(path + ": dtype is not little-endian float32" + (allow_uint8 ? " or uint8" : "") + " (" +
                             descr.substr(0, descr.find(',')) + ")");
  if (field("fortran_order").find("False") != field("fortran_order").find_first_not_of(' '))
    throw std::runtime_error(path + ": Fortran-ordered arrays are not supported (save a C-contiguous array)");
  std::string shape = field("shape");
  shape = shape.substr(shape.find('(') + 1, shape.find(')') - shape.find('(') - 1);
  Array a;
  std::size_t count = 1, pos = 0;
  while (pos < shape.size()) {
    auto comma = shape.find(',', pos);
    std::string item = shape.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (item.find_first_not_of(' ') != std::string::npos) {
      a.shape.push_back(std::stoll(item));
      count *= static_cast<std::size_t>(a.shape.back());
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (is_u8) {
    a.bytes.resize(count);
    if (!in.read(reinterpret_cast<char*>(a.bytes.data()), static_cast<std::streamsize>(count)))
      throw std::runtime_error(path + ": truncated data (expected " + std::to_string(count) + " bytes)");
    return a;
  }
  a.data.resize(count);
  if (!in.read(reinterpret_cast<char*>(a.data.data()), static_cast<std::streamsize>(count * sizeof(float))))
    throw std::runtime_error(path + ": truncated data (expected " + std::to_string(count) + " floats)");
  return a;
}

inline Array load_float32(const std::string& path) { return load(path, false); }

// Write a C-order array as .npy version 1.0; descr "|u1" (uint8) or "<f4" (float32, little-endian hosts).
inline void save(const std::string& path, const void* data, std::size_t bytes, const std::vector<int64_t>& shape,
                 const std::string& descr) {
  std::string dims;
  for (auto d : shape) dims += std::to_string(d) + ",";
  if (shape.size() > 1) dims.pop_back();
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(64 - (10 + header.size() + 1) % 64, ' ');  // data aligned to 64 bytes
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  const unsigned char head[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(header.size() & 0xff),
                                  static_cast<unsigned char>(header.size() >> 8)};
  out.write(reinterpret_cast<const char*>(head), 10);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!out) throw std::runtime_error(path + ": cannot write");
}

}  // namespace npy
