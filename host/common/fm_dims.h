/* fm_dims.h: the fixed shapes of the problem, shared by every module. */
#ifndef FM_DIMS_H
#define FM_DIMS_H

#define FM_IMAGE_SIDE 28
#define FM_IMAGE_PIXELS 784
#define FM_NUM_CLASSES 10

#endif /* FM_DIMS_H */
